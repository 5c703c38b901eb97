"""Layers, the layer registry and :func:`build_layer` (YAML mapping -> Layer).

Importing this package registers every layer module of :mod:`convtrain.nn.layers` in
:data:`LAYERS` and exports each registered class under its class name
(``convtrain.nn.Conv2d``, ``convtrain.nn.GlobalAvgPool2d``, ...).
"""
from __future__ import annotations

from typing import Any, Mapping

import convtrain.nn.layers  # noqa: F401 - registers every layer type
from convtrain.nn.base import LAYERS, Layer, Shape, register_layer
from convtrain.nn.layer_types import layer_class

#: every registered layer class by its class name.
LAYER_CLASSES = {LAYERS.get(type_name).__name__: LAYERS.get(type_name) for type_name in LAYERS}
globals().update(LAYER_CLASSES)

__all__ = ["LAYERS", "Layer", "Shape", "build_layer", "register_layer", *sorted(LAYER_CLASSES)]


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
    layer_cls = layer_class(f"model.layers.{name}", spec)
    options = {key: value for key, value in spec.items() if key != "type"}
    return layer_cls.from_config(name, options, tuple(int(s) for s in input_shape), defaults)
