"""convtrain: configuration-driven CNN training on a hand-written NumPy im2col engine.

>>> import convtrain
>>> model = convtrain.build_model({"layers": {"conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3},
...                                           "flat": {"type": "flatten"},
...                                           "fc1": {"type": "dense", "units": 10}}}, (1, 8, 8))
>>> model.output_shape
(10,)
"""
__version__ = "0.1.0"

from convtrain.backend import Backend, get_backend  # noqa: E402
from convtrain.errors import ConfigError, DataError  # noqa: E402
from convtrain.model import Model, build_model  # noqa: E402

__all__ = ["Backend", "ConfigError", "DataError", "Model", "build_model", "get_backend", "__version__"]
