"""The training loop, its hooks, checkpoints and run metrics (see :mod:`.trainer`).

Names are imported on first use, so the config schema can read :mod:`.options` without
loading the loop (and with it the data loaders and the math).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Checkpoint": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "METRIC_KEYS": "metrics", "MONITORS": "options", "Hook": "hooks", "TrainState": "hooks",
    "Trainer": "trainer", "TrainingDiverged": "trainer", "TrainingInterrupted": "interrupts",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
