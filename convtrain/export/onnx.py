"""A convtrain model as an ONNX graph that takes raw pixels and returns logits.

The graph (opset >= 17, dynamic batch dimension ``batch``)::

    pixels (batch, C, H, W) float32, raw as the dataset stores them (0..255, digits 0..16)
      -> Div pixel_max, Sub channel_mean, Mul channel_inv_std: Preprocessing.apply's arithmetic
      -> one node (or a few) per layer, wired as the model's graph (a stack, or branches
         joined by add / concat), in the model's order
      -> logits (batch, K)

Names: each layer's node is called after the layer's config key (``conv1``), its output
``conv1.out``, its weights keep their ``state_dict`` names (``conv1.weight``; inside a block
``stage2.block1.conv1.weight``); dropout (the identity at inference) and identity layers make
no node. The preprocessing, the model's name and, when given,
the class names are stored as metadata (``convtrain.preprocessing``, ``convtrain.model``,
``convtrain.class_names``; JSON).

One exporter per layer type, in :data:`ONNX_EXPORTERS` keyed by the layer's YAML ``type``: a
new layer type needs one ``@onnx_exporter("type")`` function here (and one entry in
:mod:`convtrain.export.torch_code`).

:func:`export_onnx` checks the graph (``onnx.checker``) and, given a batch of raw inputs,
compares onnxruntime's logits with convtrain's before anything is written; a difference above
the tolerance (:func:`convtrain.export.settings.allowed_difference`) is a one-line error and
leaves an existing file alone.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Sequence

import numpy as np

import convtrain
from convtrain import validate
from convtrain.data.splits import Preprocessing
from convtrain.errors import ConfigError
from convtrain.export.optional import require
from convtrain.export.settings import MIN_OPSET, TOLERANCE
from convtrain.export.walk import (LayerStep, LogitCheck, check_preprocessing, checked_raw_batch,
                                  exporter_for, model_steps, reference_logits)
from convtrain.nn.graph import INPUT
from convtrain.nn.model import Model
from convtrain.training.atomic import atomic_write_bytes

INPUT_NAME = "pixels"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
#: metadata key of the preprocessing (JSON: pixel_max, mean, std).
PREPROCESSING_KEY = "convtrain.preprocessing"
#: metadata key of the class names, one per logit (JSON list), when known.
CLASS_NAMES_KEY = "convtrain.class_names"


class OnnxGraph:
    """The nodes and constants of a graph under construction.

    Exporters add to it and return the name of their output tensor. A layer's tensors and
    constants are called ``<layer>.<what>`` (``conv1.out``, ``conv1.weight``) and its nodes
    ``<layer>`` or ``<layer>.<what>``. Every name derived from a layer contains a dot, so the
    dot-free names of the graph's own tensors (``pixels``, ``normalized_pixels``, ``logits``,
    ``pixel_max``, ...) cannot collide with them, whatever the layers are called; nor can the
    preprocessing's nodes (``preprocessing.divide``, ...): a top-level layer name has no dot
    and a block's layers are called ``<instance>.block<i>.<layer>``.
    """

    def __init__(self, opset: int = MIN_OPSET) -> None:
        self.onnx = require("onnx", "export ONNX models")
        self.opset = opset  # exporters may use newer ops where the opset has them
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, value: Any) -> str:
        """Add a float32 constant called ``name``; returns ``name``."""
        array = np.ascontiguousarray(value, dtype=np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op_type: str, inputs: list[str], name: str, output: str,
             **attributes: Any) -> str:
        """Add the node ``name`` computing ``output = op_type(*inputs)``; returns ``output``."""
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], name=name,
                                                     **attributes))
        return output

    def scalar(self, step: LayerStep, label: str, value: float) -> str:
        """A float32 scalar constant of the layer, called ``<layer>.<label>``."""
        return self.constant(f"{step.name}.{label}", np.float32(value))

    def parameter(self, step: LayerStep, key: str) -> str:
        """The layer's ``state[key]`` as a constant named like its state_dict entry."""
        return self.constant(f"{step.name}.{key}", step.state[key])

    def rename_output(self, tensor: str, new_name: str) -> None:
        """Call ``tensor`` ``new_name`` everywhere (the last layer's output becomes ``logits``);
        the graph input gets an Identity node instead."""
        if tensor == INPUT_NAME:
            self.node("Identity", [tensor], new_name, new_name)
            return
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == tensor:
                        names[i] = new_name


#: ``(graph, step, input tensor) -> output tensor`` for one layer; a merge layer
#: (``merges_inputs``: add, concat) gets the list of its input tensors instead.
OnnxExporter = Callable[[OnnxGraph, LayerStep, Any], str]
#: layer ``type`` -> its exporter.
ONNX_EXPORTERS: dict[str, OnnxExporter] = {}


def onnx_exporter(*type_names: str) -> Callable[[OnnxExporter], OnnxExporter]:
    """Decorator: ``@onnx_exporter("conv2d")`` makes the function the exporter of that type."""

    def register(function: OnnxExporter) -> OnnxExporter:
        for type_name in type_names:
            if type_name in ONNX_EXPORTERS:
                raise ValueError(f"ONNX exporter of '{type_name}' is registered twice")
            ONNX_EXPORTERS[type_name] = function
        return function

    return register


def _out(step: LayerStep) -> str:
    return f"{step.name}.out"


def _window(kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> dict[str, list[int]]:
    """ONNX window attributes; convtrain pads symmetrically (``"same"`` already resolved),
    ONNX lists ``[top, left, bottom, right]``."""
    (ph, pw) = padding
    return {"kernel_shape": list(kernel), "strides": list(stride), "pads": [ph, pw, ph, pw]}


@onnx_exporter("conv2d")
def _conv2d(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    layer = step.layer
    inputs = [x, graph.parameter(step, "weight")]
    if "bias" in step.state:
        inputs.append(graph.parameter(step, "bias"))
    return graph.node("Conv", inputs, step.name, _out(step),
                      dilations=list(layer.dilation), group=int(layer.groups),
                      **_window(layer.kernel_size, layer.stride, layer.padding))


@onnx_exporter("batchnorm2d", "batchnorm1d")
def _batchnorm(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # (N, C, H, W) or (N, F): ONNX normalises axis 1 of either
    # inference: the running statistics, as convtrain's forward(training=False)
    inputs = [x] + [graph.parameter(step, key)
                    for key in ("weight", "bias", "running_mean", "running_var")]
    return graph.node("BatchNormalization", inputs, step.name, _out(step),
                      epsilon=float(step.layer.eps))


@onnx_exporter("maxpool2d")
def _maxpool2d(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # ONNX's MaxPool never picks padding, like convtrain's -inf padding
    layer = step.layer
    return graph.node("MaxPool", [x], step.name, _out(step),
                      **_window(layer.kernel_size, layer.stride, layer.padding))


@onnx_exporter("avgpool2d")
def _avgpool2d(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    layer = step.layer
    return graph.node("AveragePool", [x], step.name, _out(step),
                      count_include_pad=int(bool(layer.count_include_pad)),
                      **_window(layer.kernel_size, layer.stride, layer.padding))


@onnx_exporter("global_avgpool2d")
def _global_avgpool2d(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # (N, C, H, W) -> (N, C, 1, 1) -> (N, C)
    pooled = graph.node("GlobalAveragePool", [x], f"{step.name}.pool", f"{step.name}.pooled")
    return graph.node("Flatten", [pooled], step.name, _out(step), axis=1)


@onnx_exporter("flatten")
def _flatten(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # C order (channel, row, column), as convtrain's reshape
    return graph.node("Flatten", [x], step.name, _out(step), axis=1)


@onnx_exporter("dense")
def _dense(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # weight (out, in) like nn.Linear: y = x @ W^T + b
    inputs = [x, graph.parameter(step, "weight")]
    if "bias" in step.state:
        inputs.append(graph.parameter(step, "bias"))
    return graph.node("Gemm", inputs, step.name, _out(step), transB=1)


def _elementwise(op_type: str) -> OnnxExporter:
    def export(graph: OnnxGraph, step: LayerStep, x: str) -> str:
        return graph.node(op_type, [x], step.name, _out(step))

    export.__name__ = f"_{op_type.lower()}"
    return export


onnx_exporter("relu")(_elementwise("Relu"))
onnx_exporter("tanh")(_elementwise("Tanh"))
onnx_exporter("sigmoid")(_elementwise("Sigmoid"))


@onnx_exporter("softmax")
def _softmax(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # over the first per-sample axis (features, or the channels at each pixel); opset >= 13
    # normalises along that one axis, like convtrain and torch.nn.Softmax(dim=1)
    return graph.node("Softmax", [x], step.name, _out(step), axis=1)


@onnx_exporter("elu")
def _elu(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    return graph.node("Elu", [x], step.name, _out(step), alpha=float(step.layer.alpha))


@onnx_exporter("silu")
def _silu(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    # x * sigmoid(x): no SiLU op before opset 24
    gate = graph.node("Sigmoid", [x], f"{step.name}.sigmoid", f"{step.name}.gate")
    return graph.node("Mul", [x, gate], step.name, _out(step))


@onnx_exporter("gelu")
def _gelu(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    approximate = str(step.layer.approximate)
    if graph.opset >= 20:  # the opset that introduced Gelu
        return graph.node("Gelu", [x], step.name, _out(step), approximate=approximate)
    name = step.name

    def node(op_type: str, inputs: list[str], label: str) -> str:
        return graph.node(op_type, inputs, f"{name}.{label}", f"{name}.{label}")

    if approximate == "tanh":  # tanh(sqrt(2/pi) * (x + 0.044715 x^3))
        cube = node("Mul", [node("Mul", [x, x], "square"), x], "cube")
        inner = node("Add", [x, node("Mul", [cube, graph.scalar(step, "cubic_coefficient",
                                                                 0.044715)], "cubic")], "inner")
        inner = node("Mul", [inner, graph.scalar(step, "sqrt_2_over_pi", math.sqrt(2 / math.pi))],
                     "scaled")
        shape = node("Tanh", [inner], "tanh")
    else:  # erf(x / sqrt(2))
        shape = node("Erf", [node("Mul", [x, graph.scalar(step, "sqrt_half", math.sqrt(0.5))],
                                  "scaled")], "erf")
    # x * Phi(x) = (x / 2) * (1 + shape)
    one_plus = node("Add", [shape, graph.scalar(step, "one", 1.0)], "one_plus")
    half_x = node("Mul", [x, graph.scalar(step, "half", 0.5)], "half_x")
    return graph.node("Mul", [half_x, one_plus], name, _out(step))


@onnx_exporter("leaky_relu")
def _leaky_relu(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    return graph.node("LeakyRelu", [x], step.name, _out(step),
                      alpha=float(step.layer.negative_slope))


@onnx_exporter("dropout", "dropout2d", "identity")
def _pass_through(graph: OnnxGraph, step: LayerStep, x: str) -> str:
    return x  # the identity (dropout: at inference): no node


@onnx_exporter("add")
def _add(graph: OnnxGraph, step: LayerStep, xs: list[str]) -> str:
    return graph.node("Sum", list(xs), step.name, _out(step))


@onnx_exporter("concat")
def _concat(graph: OnnxGraph, step: LayerStep, xs: list[str]) -> str:
    return graph.node("Concat", list(xs), step.name, _out(step), axis=1)  # channels / features


# --- the whole graph -------------------------------------------------------------------------
def check_opset(opset: Any, key: str = "export.opset") -> int:
    """``opset`` as an int between :data:`MIN_OPSET` and the newest the installed onnx knows.

    Raises:
        ConfigError: naming ``key``.
    """
    onnx = require("onnx", "export ONNX models")
    newest = int(onnx.defs.onnx_opset_version())
    value = validate.integer(key, opset, low=MIN_OPSET)
    if value > newest:
        raise ConfigError(f"{key}: opset {value} is newer than the installed onnx "
                          f"{onnx.__version__} knows (at most {newest})")
    return value


def _preprocessing_nodes(graph: OnnxGraph, preprocessing: Preprocessing) -> str:
    """``(pixels / pixel_max - mean) * (1 / std)`` per channel: the float32 operations of
    :meth:`Preprocessing.apply` in its order, so the graph's normalised input equals training's
    bit for bit. (Folded into one Mul and one Add the constants round differently: measured up
    to 5e-6 more logit difference, half of the check's 1e-5, for two fewer elementwise ops.)"""
    pixel_max, mean, inv_std = preprocessing.constants()
    channels = (1, preprocessing.channels, 1, 1)
    x = graph.node("Div", [INPUT_NAME, graph.constant("pixel_max",
                                                      np.reshape(pixel_max, (1, 1, 1, 1)))],
                   "preprocessing.divide", "unit_pixels")
    x = graph.node("Sub", [x, graph.constant("channel_mean", mean.reshape(channels))],
                   "preprocessing.subtract", "centered_pixels")
    return graph.node("Mul", [x, graph.constant("channel_inv_std", inv_std.reshape(channels))],
                      "preprocessing.multiply", "normalized_pixels")


def onnx_model_proto(model: Model, preprocessing: Preprocessing, opset: int = MIN_OPSET, *,
                     class_names: Sequence[str] | None = None) -> Any:
    """The checked ``onnx.ModelProto`` of ``model`` with ``preprocessing`` in front;
    ``class_names`` (one per logit) go into its metadata (``convtrain.class_names``, JSON).

    Raises:
        ConfigError: onnx missing (naming the install commands), a bad opset, a
            preprocessing that does not fit the model, or a layer type without an exporter.
    """
    onnx = require("onnx", "export ONNX models")
    helper = onnx.helper
    opset = check_opset(opset)
    check_preprocessing(model, preprocessing)
    graph = OnnxGraph(opset)

    tensors = {INPUT: _preprocessing_nodes(graph, preprocessing)}  # layer -> its output
    for step in model_steps(model):
        export = exporter_for(ONNX_EXPORTERS, step, "ONNX", "convtrain/export/onnx.py")
        feeds = [tensors[name] for name in step.inputs]
        tensors[step.name] = export(graph, step, feeds if step.layer.merges_inputs else feeds[0])
    graph.rename_output(tensors[model.output_name], OUTPUT_NAME)

    float32 = onnx.TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info(INPUT_NAME, float32,
                                            [BATCH_DIM, *model.input_shape])]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, float32,
                                             [BATCH_DIM, *model.output_shape])]
    name = model.name or "convtrain_model"
    onnx_graph = helper.make_graph(graph.nodes, name, inputs, outputs, graph.initializers)
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        onnx_graph, opset_imports=opsets, producer_name="convtrain",
        producer_version=convtrain.__version__,
        doc_string=(f"convtrain model '{name}': raw pixels float32 (N, "
                    f"{', '.join(map(str, model.input_shape))}) in 0..{preprocessing.pixel_max:g} "
                    f"-> logits (N, {', '.join(map(str, model.output_shape))})"))
    # the oldest IR version that carries this opset: older runtimes load the file too
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    metadata = {PREPROCESSING_KEY: json.dumps(preprocessing.as_dict()), "convtrain.model": name}
    if class_names is not None:
        metadata[CLASS_NAMES_KEY] = json.dumps([str(c) for c in class_names])
    helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return proto


# --- verification ----------------------------------------------------------------------------
def _session(model_source: str | bytes) -> Any:
    """An onnxruntime CPU session on a file path or serialized model bytes."""
    ort = require("onnxruntime", "verify the ONNX export")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers etc. are not ours
    return ort.InferenceSession(model_source, sess_options=options,
                                providers=["CPUExecutionProvider"])


def _check(session: Any, model: Model, preprocessing: Preprocessing, raw_batch: Any,
           tolerance: float) -> LogitCheck:
    batch = checked_raw_batch(model, raw_batch)
    exported = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    return LogitCheck.compare("onnxruntime", exported,
                              reference_logits(model, preprocessing, batch), tolerance)


def verify_onnx(path: str | os.PathLike, model: Model, preprocessing: Preprocessing,
                raw_batch: Any) -> float:
    """The max abs difference between the logits of the ONNX file at ``path`` (onnxruntime,
    on ``raw_batch`` as is) and convtrain's ``model.forward(preprocessing.apply(raw_batch),
    training=False)``; ``inf`` when either is not finite or the shapes differ.

    Args:
        raw_batch: raw pixels ``(N, C, H, W)``, as the dataset stores them.

    Raises:
        ConfigError: onnxruntime missing, or a batch of the wrong shape.
    """
    return _check(_session(os.fspath(path)), model, preprocessing, raw_batch, TOLERANCE).difference


def export_onnx(model: Model, path: str | os.PathLike, *, preprocessing: Preprocessing,
                opset: int = MIN_OPSET, verify_batch: Any = None,
                tolerance: float = TOLERANCE,
                class_names: Sequence[str] | None = None) -> LogitCheck | None:
    """Write ``model`` with ``preprocessing`` in front as an ONNX file at ``path`` (atomic).

    Args:
        model: the model (any backend or dtype; the file is float32).
        path: the ``.onnx`` file to write (parent directories are created).
        preprocessing: raw pixels -> the model's input (:class:`Preprocessing`).
        opset: the ONNX opset, at least :data:`MIN_OPSET`.
        verify_batch: raw pixels ``(N, C, H, W)``: before writing, onnxruntime's logits on them
            must agree with convtrain's within ``tolerance`` (x the largest |logit| when above
            1: :func:`convtrain.export.settings.allowed_difference`; None: no check).
        class_names: one name per logit, stored in the file's metadata.

    Returns:
        The check (its ``difference`` is the printed figure); None without ``verify_batch``.

    Raises:
        ConfigError: see :func:`onnx_model_proto`; a failed check (one line; nothing is
            written).
        OSError: the file cannot be written (``filename`` is ``path``).
    """
    data = onnx_model_proto(model, preprocessing, opset,
                            class_names=class_names).SerializeToString()
    check = None
    if verify_batch is not None:
        check = _check(_session(data), model, preprocessing, verify_batch, tolerance)
        if not check.passed:
            raise check.failure("the ONNX model", f"{os.fspath(path)} was not written")
    atomic_write_bytes(path, data)
    return check


__all__ = ["ONNX_EXPORTERS", "OnnxGraph", "TOLERANCE", "MIN_OPSET", "check_opset",
           "export_onnx", "onnx_exporter", "onnx_model_proto", "verify_onnx"]
