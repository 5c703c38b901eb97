"""Layer classes, the layer registry and :func:`build_layer` (YAML mapping -> Layer).

Importing this package registers every built-in layer type in :data:`LAYERS`.
"""
from __future__ import annotations

from typing import Any, Mapping

from convtrain.errors import ConfigError
from convtrain.nn.activation import LeakyReLU, ReLU, Sigmoid, Tanh
from convtrain.nn.base import LAYERS, Layer, Shape
from convtrain.nn.batchnorm import BatchNorm2d
from convtrain.nn.common import ConcreteLayer
from convtrain.nn.conv import Conv2d
from convtrain.nn.dense import Dense
from convtrain.nn.dropout import Dropout
from convtrain.nn.pool import AvgPool2d, MaxPool2d
from convtrain.nn.reshape import Flatten

__all__ = [
    "LAYERS", "Layer", "ConcreteLayer", "Shape", "build_layer",
    "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dense",
    "Flatten", "Dropout", "BatchNorm2d",
]


def build_layer(name: str, spec: Mapping[str, Any], input_shape: Shape,
                defaults: Mapping[str, Any]) -> Layer:
    """Build the layer ``model.layers.<name>`` from its YAML mapping.

    Args:
        name: the layer's key (``"conv1"``).
        spec: its mapping, with ``type`` (a registered name) and that type's keys.
        input_shape: per-sample input shape, ``(C, H, W)`` or ``(features,)``.
        defaults: model-wide settings: ``init`` (initializer name), ``rng`` (NumPy Generator
            for initial weights), ``dtype``.

    Raises:
        ConfigError: missing or unknown ``type`` (with the known types and a "did you mean"),
            or any error of the layer's own ``from_config``.
    """
    where = f"model.layers.{name}"
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{type: conv2d, ...}}, got "
                          f"{spec!r} ({type(spec).__name__})")
    if spec.get("type") is None:
        raise ConfigError(f"{where}: missing 'type' (known types: {', '.join(LAYERS.names())})")
    layer_cls = LAYERS.get(spec["type"], where=where)
    options = {key: value for key, value in spec.items() if key != "type"}
    return layer_cls.from_config(name, options, tuple(int(s) for s in input_shape), defaults)
