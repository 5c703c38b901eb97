"""convtrain: configuration-driven CNN training on a hand-written NumPy im2col engine.

>>> import convtrain
>>> model = convtrain.build_model({"layers": {"conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3},
...                                           "flat": {"type": "flatten"},
...                                           "fc1": {"type": "dense", "units": 10}}}, (1, 8, 8))
>>> model.output_shape
(10,)

The package's rooms (see docs/architecture.md): ``ops`` (the math) and ``runtime`` (the machine)
at the bottom, ``nn`` (layers, model), ``optim``, ``data``, ``training``, ``visuals`` and ``app``
(command line) above them. The names below are imported lazily, so that ``import convtrain.ops``
loads the math alone (no Hydra, no OmegaConf).
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Backend": "convtrain.runtime.backend",
    "get_backend": "convtrain.runtime.backend",
    "ConfigError": "convtrain.errors",
    "DataError": "convtrain.errors",
    "InternalError": "convtrain.errors",
    "Model": "convtrain.nn.model",
    "build_model": "convtrain.nn.model",
    "load_run": "convtrain.inference.run",
    "model_config": "convtrain.app.model_configs",
    "TrainedRun": "convtrain.inference.run",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'convtrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
