"""What both export routes share: the model's layers with their host weights, the one message
for a layer type a route cannot export, and the check of exported logits against convtrain's."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, TypeVar

import numpy as np

from convtrain.data.splits import Preprocessing
from convtrain.errors import ConfigError
from convtrain.export.settings import allowed_difference
from convtrain.nn import Layer, Shape
from convtrain.nn.model import Model, layer_type_name
from convtrain.runtime.backend import to_host

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class LayerStep:
    """One layer as an exporter sees it.

    Attributes:
        name: the layer's name in the model (``"conv1"``; ``"stage2.block1.conv1"`` inside a
            block): the prefix of its state_dict names and the name of what the exporters make
            of it (ONNX nodes, torch submodules).
        type_name: the layer's YAML ``type`` (``"conv2d"``): the key of the exporter tables.
        layer: the layer itself (its resolved options: ``padding``, ``stride``, ...).
        inputs: the names of the layers feeding it, in the order its ``forward`` takes them
            (:data:`~convtrain.nn.graph.INPUT` for the model input); one name unless the layer
            ``merges_inputs`` (add, concat).
        state: host float32 copies of its params and buffers by short key (``"weight"``,
            ``"running_mean"``), whatever the model's backend and dtype.
        input_shape, output_shape: per-sample shapes, e.g. ``(C, H, W)`` (a merge layer's
            input shape is the tuple of its inputs' shapes).
    """

    name: str
    type_name: str
    layer: Layer
    inputs: tuple[str, ...]
    state: dict[str, np.ndarray]
    input_shape: Any
    output_shape: Shape

    @property
    def where(self) -> str:
        """The layer's config path for messages (``model.layers.conv1``)."""
        return getattr(self.layer, "where", None) or f"model.layers.{self.name}"


def model_steps(model: Model) -> list[LayerStep]:
    """The model's layers as :class:`LayerStep` s in :attr:`Model.order` (a topological order:
    every layer after the layers feeding it; config order for a stack). The exporters follow
    the graph as configured; convtrain's forward may run a ReLU after the max pooling that
    follows it, which is the same function."""
    state = model.state_dict()
    steps = []
    for name in model.order:
        layer = model.layers[name]
        own = {key: np.asarray(state[f"{name}.{key}"], dtype=np.float32)
               for key in (*layer.params, *layer.buffers)}
        input_shape, output_shape = model.layer_shapes[name]
        steps.append(LayerStep(name, layer_type_name(layer), layer, tuple(model.inputs_of(name)),
                               own, input_shape, output_shape))
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


def check_preprocessing(model: Model, preprocessing: Preprocessing) -> None:
    """Raise unless ``preprocessing`` is a :class:`Preprocessing` whose channels are the
    model's input channels (an image model ``(C, H, W)``).

    Raises:
        ConfigError: one line with both.
    """
    if not isinstance(preprocessing, Preprocessing):
        raise ConfigError(f"export: preprocessing must be a convtrain.data.splits.Preprocessing, "
                          f"got {type(preprocessing).__name__}")
    if len(model.input_shape) != 3 or model.input_shape[0] != preprocessing.channels:
        raise ConfigError(f"export: the preprocessing has {preprocessing.channels} channel(s) "
                          f"but the model takes inputs of shape {model.input_shape}")


def checked_raw_batch(model: Model, raw_batch: Any) -> np.ndarray:
    """``raw_batch`` as host float32 ``(N, *model.input_shape)`` with N >= 1 (a check's inputs).

    Raises:
        ConfigError: another shape.
    """
    batch = np.ascontiguousarray(to_host(raw_batch), dtype=np.float32)
    if batch.ndim != len(model.input_shape) + 1 or batch.shape[1:] != model.input_shape \
            or batch.shape[0] == 0:
        raise ConfigError(f"export: the verification batch must be raw pixels of shape (N, "
                          f"{', '.join(map(str, model.input_shape))}) with N >= 1, got "
                          f"{batch.shape}")
    return batch


def reference_logits(model: Model, preprocessing: Preprocessing, batch: np.ndarray) -> np.ndarray:
    """convtrain's logits for raw pixels ``batch``: ``model.forward(preprocessing.apply(batch),
    training=False)`` on the host, float64."""
    logits = model.forward(preprocessing.apply(batch), training=False)
    return to_host(logits).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class LogitCheck:
    """An exported model's logits against convtrain's on the same raw inputs.

    Attributes:
        runtime: what ran the export (``onnxruntime``, ``PyTorch``).
        samples: how many inputs.
        difference: max |exported - convtrain| (inf for another shape or a non-finite value).
        largest_logit: max |convtrain logit|.
        tolerance: see :func:`convtrain.export.settings.allowed_difference`.
    """

    runtime: str
    samples: int
    difference: float
    largest_logit: float
    tolerance: float

    @classmethod
    def compare(cls, runtime: str, exported: Any, reference: np.ndarray,
                tolerance: float) -> LogitCheck:
        exported = np.asarray(exported, dtype=np.float64)
        largest = float(np.max(np.abs(reference))) if reference.size else 0.0
        if exported.shape != reference.shape:
            difference = math.inf
        else:
            gaps = np.abs(exported - reference)
            difference = float(gaps.max()) if np.all(np.isfinite(gaps)) else math.inf
        return cls(runtime, int(reference.shape[0]), difference, largest, float(tolerance))

    @property
    def allowed(self) -> float:
        return allowed_difference(self.tolerance, self.largest_logit)

    @property
    def passed(self) -> bool:
        return self.difference <= self.allowed  # False for inf and NaN

    def summary(self, inputs: str = "inputs") -> str:
        """``onnxruntime vs convtrain on 256 test images: max abs logit difference 5.72e-06
        (largest |logit| 24, allowed 2.4e-04)``."""
        return (f"{self.runtime} vs convtrain on {self.samples} {inputs}: max abs logit "
                f"difference {self.difference:.3g} (largest |logit| {self.largest_logit:.3g}, "
                f"allowed {self.allowed:.2g})")

    def failure(self, what: str, target: str) -> ConfigError:
        """The one line of a failed check: ``what`` was exported, ``target`` not written."""
        return ConfigError(f"export: {what}'s logits differ from convtrain's by up to "
                           f"{self.difference:.3g} on {self.samples} inputs (allowed "
                           f"{self.allowed:.2g}: tolerance {self.tolerance:g} x max(1, largest "
                           f"|logit| {self.largest_logit:.3g})); {target}")

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "samples": self.samples,
                "max_abs_difference": self.difference, "largest_abs_logit": self.largest_logit,
                "tolerance": self.tolerance, "allowed": self.allowed}
