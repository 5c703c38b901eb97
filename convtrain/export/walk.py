"""What every exporter walks: the model's layers with their host weights, and the one message
for a layer type a route cannot export."""
from __future__ import annotations

import dataclasses
from typing import Mapping, TypeVar

import numpy as np

from convtrain.errors import ConfigError
from convtrain.nn import Layer, Shape
from convtrain.nn.model import Model, layer_type_name

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LayerStep:
    """One layer as an exporter sees it.

    Attributes:
        name: the layer's config key (``"conv1"``): the prefix of its state_dict names and the
            name of what the exporters make of it (ONNX nodes, torch submodules).
        type_name: the layer's YAML ``type`` (``"conv2d"``): the key of the exporter tables.
        layer: the layer itself (its resolved options: ``padding``, ``stride``, ...).
        state: host float32 copies of its params and buffers by short key (``"weight"``,
            ``"running_mean"``), whatever the model's backend and dtype.
        input_shape, output_shape: per-sample shapes, e.g. ``(C, H, W)``.
    """

    name: str
    type_name: str
    layer: Layer
    state: dict[str, np.ndarray]
    input_shape: Shape
    output_shape: Shape

    @property
    def where(self) -> str:
        """The layer's config path for messages (``model.layers.conv1``)."""
        return getattr(self.layer, "where", None) or f"model.layers.{self.name}"


def model_steps(model: Model, *, run_order: bool) -> list[LayerStep]:
    """The model's layers as :class:`LayerStep` s: in the order ``forward`` runs them
    (``run_order=True``; the result is the same math, see ``Model.named_run_order``) or in
    config order (the state_dict's order)."""
    state = model.state_dict()
    pairs = model.named_run_order() if run_order else list(model.layers.items())
    steps = []
    for name, layer in pairs:
        prefix = f"{name}."
        own = {key[len(prefix):]: np.asarray(value, dtype=np.float32)
               for key, value in state.items() if key.startswith(prefix)}
        input_shape, output_shape = model.layer_shapes[name]
        steps.append(LayerStep(name, layer_type_name(layer), layer, own, input_shape,
                               output_shape))
    return steps


def exporter_for(table: Mapping[str, T], step: LayerStep, route: str, module: str) -> T:
    """``table[step.type_name]``, or one line naming the layer, its type and what exists.

    Raises:
        ConfigError: ``model.layers.act1: layer type 'gelu' has no ONNX exporter (exportable
            types: ...; a new type needs one entry in convtrain/export/onnx.py)``.
    """
    try:
        return table[step.type_name]
    except KeyError:
        raise ConfigError(f"{step.where}: layer type '{step.type_name}' has no {route} exporter "
                          f"(exportable types: {', '.join(sorted(table))}; a new type needs one "
                          f"entry in {module})") from None
