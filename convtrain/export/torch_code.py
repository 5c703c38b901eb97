"""The PyTorch route: a convtrain model as the source of an equivalent ``torch.nn.Module``.

:func:`torch_module_source` writes a self-contained ``model.py`` (a module-level usage note,
then one class: the preprocessing as non-persistent buffers, one submodule per layer named
after it (a block's layers ``stage2.block1.conv1`` in nested modules, so the names match), and
a ``forward`` in the model's order: ``x = self.conv1(x)`` lines for a stack, one variable per
layer output for a graph, ``a + b`` / ``torch.cat([a, b], dim=1)`` for add / concat); :func:`write_torch_export` saves it
next to ``model.safetensors`` with the weights. The class's ``state_dict`` names are
convtrain's (``conv1.weight``, ``bn1.running_var``; PyTorch's BatchNorm adds its own
``num_batches_tracked``, which it fills in on load), so ``load_state_dict(load_file(...))``
loads the safetensors file as is, and the preprocessing constants, which belong to the code,
are not among them.

Writing needs neither torch nor onnx; running the code needs torch
(:func:`verify_torch_export` compares it with convtrain's forward pass).

One exporter per layer type in :data:`TORCH_EXPORTERS`, keyed by the layer's YAML ``type``:
each returns the constructor expression of the equivalent ``torch.nn`` module. Dropout stays
(``nn.Dropout``: the identity after ``model.eval()``, and the model can be fine-tuned).
"""
from __future__ import annotations

import builtins
import dataclasses
import keyword
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

import convtrain
from convtrain.data.splits import Preprocessing
from convtrain.errors import ConfigError
from convtrain.export.optional import require
from convtrain.export.settings import TOLERANCE
from convtrain.export.walk import (LayerStep, LogitCheck, check_preprocessing, checked_raw_batch,
                                  exporter_for, model_steps, reference_logits)
from convtrain.nn.graph import INPUT
from convtrain.nn.model import Model
from convtrain.training.atomic import atomic_write_bytes, atomic_write_text

SOURCE_FILE = "model.py"
WEIGHTS_FILE = "model.safetensors"
#: the preprocessing constants (buffers of the generated module, not in its state_dict).
PREPROCESSING_BUFFERS = ("input_pixel_max", "input_mean", "input_inv_std")
#: what ``torch.nn.Module`` (torch 2.x) already has: a submodule cannot take these names.
#: tests/export/test_torch_code.py checks the list against the installed torch.
MODULE_ATTRIBUTES = frozenset("""
    T_destination _apply _backward_hooks _backward_pre_hooks _buffers _call_impl
    _compiled_call_impl _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs
    _forward_pre_hooks _forward_pre_hooks_with_kwargs _get_backward_hooks
    _get_backward_pre_hooks _get_name _is_full_backward_hook _load_from_state_dict
    _load_state_dict_post_hooks _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook
    _modules _named_members _non_persistent_buffers_set _parameters
    _register_load_state_dict_pre_hook _register_state_dict_hook _replicate_for_data_parallel
    _save_to_state_dict _slow_forward _state_dict_hooks _state_dict_pre_hooks _version
    _wrapped_call_impl add_module apply bfloat16 buffers call_super_init children compile cpu
    cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half ipu load_state_dict modules mtia named_buffers
    named_children named_modules named_parameters parameters register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook
    register_full_backward_hook register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory state_dict to to_empty train training type xpu zero_grad
""".split())

@dataclasses.dataclass(frozen=True)
class Inline:
    """A layer that ``forward()`` computes from its inputs' variables, without a submodule (the
    merge layers): ``expression(["a", "b"]) -> "a + b"``."""

    expression: Callable[[list[str]], str]


#: ``step -> "nn.Conv2d(...)"`` (the constructor of the equivalent submodule) or an
#: :class:`Inline` expression.
TorchExporter = Callable[[LayerStep], "str | Inline"]
#: layer ``type`` -> its exporter.
TORCH_EXPORTERS: dict[str, TorchExporter] = {}


def torch_exporter(*type_names: str) -> Callable[[TorchExporter], TorchExporter]:
    """Decorator: ``@torch_exporter("conv2d")`` makes the function the exporter of that type."""

    def register(function: TorchExporter) -> TorchExporter:
        for type_name in type_names:
            if type_name in TORCH_EXPORTERS:
                raise ValueError(f"torch exporter of '{type_name}' is registered twice")
            TORCH_EXPORTERS[type_name] = function
        return function

    return register


def _call(constructor: str, *positional: Any, **keywords: Any) -> str:
    """``nn.Conv2d(1, 16, kernel_size=(3, 3))``: Python literals (``repr`` round-trips floats)."""
    arguments = [repr(value) for value in positional]
    arguments += [f"{key}={value!r}" for key, value in keywords.items()]
    return f"{constructor}({', '.join(arguments)})"


def _pair(value: Any) -> tuple[int, int]:
    return tuple(int(v) for v in value)


@torch_exporter("conv2d")
def _conv2d(step: LayerStep) -> str:
    layer = step.layer
    keywords: dict[str, Any] = {"kernel_size": _pair(layer.kernel_size)}
    # non-default settings only; "same" is written out as the padding it resolved to
    for key, value, default in (("stride", _pair(layer.stride), (1, 1)),
                                ("padding", _pair(layer.padding), (0, 0)),
                                ("dilation", _pair(layer.dilation), (1, 1)),
                                ("groups", int(layer.groups), 1),
                                ("bias", bool(layer.use_bias), True)):
        if value != default:
            keywords[key] = value
    return _call("nn.Conv2d", int(layer.in_channels), int(layer.out_channels), **keywords)


def _batchnorm(constructor: str) -> TorchExporter:
    def export(step: LayerStep) -> str:
        layer = step.layer
        return _call(constructor, int(layer.num_features), eps=float(layer.eps),
                     momentum=float(layer.momentum))

    return export


torch_exporter("batchnorm2d")(_batchnorm("nn.BatchNorm2d"))
torch_exporter("batchnorm1d")(_batchnorm("nn.BatchNorm1d"))


def _window_keywords(layer: Any) -> dict[str, Any]:
    return {"kernel_size": _pair(layer.kernel_size), "stride": _pair(layer.stride),
            "padding": _pair(layer.padding)}


@torch_exporter("maxpool2d")
def _maxpool2d(step: LayerStep) -> str:
    return _call("nn.MaxPool2d", **_window_keywords(step.layer))


@torch_exporter("avgpool2d")
def _avgpool2d(step: LayerStep) -> str:
    keywords = _window_keywords(step.layer)
    if not step.layer.count_include_pad:
        keywords["count_include_pad"] = False
    return _call("nn.AvgPool2d", **keywords)


@torch_exporter("global_avgpool2d")
def _global_avgpool2d(step: LayerStep) -> str:
    return "nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())"


@torch_exporter("flatten")
def _flatten(step: LayerStep) -> str:
    return "nn.Flatten()"


@torch_exporter("dense")
def _dense(step: LayerStep) -> str:
    layer = step.layer
    keywords = {} if layer.use_bias else {"bias": False}
    return _call("nn.Linear", int(layer.in_features), int(layer.out_features), **keywords)


torch_exporter("relu")(lambda step: "nn.ReLU()")
torch_exporter("tanh")(lambda step: "nn.Tanh()")
torch_exporter("sigmoid")(lambda step: "nn.Sigmoid()")
torch_exporter("silu")(lambda step: "nn.SiLU()")
torch_exporter("softmax")(lambda step: "nn.Softmax(dim=1)")


@torch_exporter("elu")
def _elu(step: LayerStep) -> str:
    return _call("nn.ELU", alpha=float(step.layer.alpha))


@torch_exporter("gelu")
def _gelu(step: LayerStep) -> str:
    approximate = str(step.layer.approximate)
    return "nn.GELU()" if approximate == "none" else _call("nn.GELU", approximate=approximate)


@torch_exporter("leaky_relu")
def _leaky_relu(step: LayerStep) -> str:
    return _call("nn.LeakyReLU", negative_slope=float(step.layer.negative_slope))


@torch_exporter("dropout")
def _dropout(step: LayerStep) -> str:
    return _call("nn.Dropout", p=float(step.layer.p))


@torch_exporter("dropout2d")
def _dropout2d(step: LayerStep) -> str:
    return _call("nn.Dropout2d", p=float(step.layer.p))


torch_exporter("identity")(lambda step: "nn.Identity()")
# the merge layers, in the order of their inputs (convtrain sums left to right too)
torch_exporter("add")(lambda step: Inline(lambda xs: " + ".join(xs)))
torch_exporter("concat")(lambda step: Inline(lambda xs: f"torch.cat([{', '.join(xs)}], dim=1)"))


# --- the source ------------------------------------------------------------------------------
def torch_class_name(model: Model) -> str:
    """``small_cnn`` -> ``SmallCnn``; ``ConvtrainModel`` when the name gives no identifier."""
    words = re.findall(r"[A-Za-z0-9]+", model.name or "")
    name = "".join(word[:1].upper() + word[1:] for word in words)
    return name if name.isidentifier() and not keyword.iskeyword(name) else "ConvtrainModel"


def _plain(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _member(owner: str, name: str) -> str:
    """``owner.name``, or ``getattr(owner, 'name')`` for a name that is no identifier."""
    return f"{owner}.{name}" if _plain(name) else f"getattr({owner}, {name!r})"


def _assignment(owner: str, name: str, value: str) -> str:
    """``owner.name = value``, or ``owner.add_module('name', value)``."""
    return f"{owner}.{name} = {value}" if _plain(name) else \
        f"{owner}.add_module({name!r}, {value})"


def _check_segment(step: LayerStep, segment: str, top: bool) -> None:
    """Raise unless ``segment`` (a part of the layer's dotted name) can name a submodule.

    Raises:
        ConfigError: the name is taken by ``torch.nn.Module`` itself or by the preprocessing.
    """
    if segment in MODULE_ATTRIBUTES or (top and segment in PREPROCESSING_BUFFERS):
        raise ConfigError(f"{step.where}: the name '{segment}' is an attribute of the exported "
                          f"torch.nn.Module (torch.nn.Module or the preprocessing already use "
                          f"it); rename the layer to export it to PyTorch")


class _Variables:
    """Python variable names for the layers' outputs in a graph's ``forward()``: the layer name
    made an identifier (``stage2.block1.add`` -> ``stage2_block1_add``), unique."""

    RESERVED = frozenset({"self", "pixels", "x", "torch", "nn", *dir(builtins)})

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, layer: str) -> str:
        if layer not in self.names:
            base = re.sub(r"\W", "_", layer)
            if not _plain(base) or base in self.RESERVED:
                base = f"h_{base}"
            name, count = base, 1
            while name in self.names.values():
                count += 1
                name = f"{base}_{count}"
            self.names[layer] = name
        return self.names[layer]


def _floats(values: np.ndarray) -> str:
    """``[0.1, 0.2]``: float32 values written so that ``torch.tensor(...)`` gets them exactly."""
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _shape(shape: tuple[int, ...]) -> str:
    return repr(tuple(int(s) for s in shape))


def _forward_lines(model: Model, steps: list[LayerStep], submodules: dict[str, str]) -> list[str]:
    """The body of ``forward()`` after the preprocessing (which leaves ``x``): a stack as
    ``x = self.layer(x)`` lines, a graph with one variable per layer output."""
    if model.is_chain:
        return [f"        x = {submodules[step.name]}(x)" for step in steps] + \
            ["        return x"]
    variable = _Variables()
    variable.names[INPUT] = "x"
    lines = []
    for step in steps:
        feeds = [variable(name) for name in step.inputs]
        exported = TORCH_EXPORTERS[step.type_name](step)
        value = (exported.expression(feeds) if isinstance(exported, Inline)
                 else f"{submodules[step.name]}({feeds[0]})")
        lines.append(f"        {variable(step.name)} = {value}")
    return lines + [f"        return {variable(model.output_name)}"]


def torch_module_source(model: Model, *, preprocessing: Preprocessing) -> str:
    """Python source of a ``torch.nn.Module`` equal to ``model`` with ``preprocessing`` first.

    The module's input is raw pixels float32 ``(N, C, H, W)`` as the dataset stores them and
    its output the logits; its state_dict names are the model's (see the module docstring).

    Raises:
        ConfigError: a layer type without a torch exporter, a layer name PyTorch cannot use,
            or a preprocessing that does not fit the model.
    """
    check_preprocessing(model, preprocessing)
    class_name = torch_class_name(model)
    pixel_max, mean, inv_std = preprocessing.constants()
    steps = model_steps(model)
    channels, height, width = model.input_shape
    # the name goes into a docstring: quotes and backslashes would end or bend it
    label = re.sub(r"[^\w .,:;()+-]", "_", model.name or "convtrain_model")
    lines = [
        f'"""{class_name}: the convtrain model \'{label}\' as a torch.nn.Module '
        f"(written by convtrain {convtrain.__version__}).",
        "",
        "Usage (the weights are in model.safetensors next to this file):",
        "",
        "    import torch",
        "    from safetensors.torch import load_file",
        f"    from model import {class_name}",
        "",
        f"    model = {class_name}()",
        '    model.load_state_dict(load_file("model.safetensors"))',
        "    model.eval()",
        "    with torch.no_grad():",
        "        logits = model(pixels)",
        "    classes = logits.argmax(dim=1)",
        "",
        f"Input: raw pixels, float32 (N, {channels}, {height}, {width}), as the dataset stores "
        f"them (0..{float(pixel_max):g}).",
        f"Output: logits, (N, {', '.join(map(str, model.output_shape))}).",
        "forward() first applies the training preprocessing, (pixels / pixel_max - mean) / std per",
        "channel; its constants are buffers outside the state_dict (persistent=False). The",
        "state_dict names are convtrain's (layer.weight, ...); BatchNorm adds num_batches_tracked",
        "itself. Dropout layers are the identity after model.eval().",
        '"""',
        "import torch",
        "from torch import nn",
        "",
        "",
        f"class {class_name}(nn.Module):",
        "    def __init__(self) -> None:",
        "        super().__init__()",
        "        # preprocessing, in the float32 operations convtrain trains with",
        f"        self.register_buffer({PREPROCESSING_BUFFERS[0]!r}, "
        f"torch.tensor({float(pixel_max)!r}), persistent=False)",
        f"        self.register_buffer({PREPROCESSING_BUFFERS[1]!r}, torch.tensor("
        f"{_floats(mean)}).reshape(1, -1, 1, 1), persistent=False)",
        f"        self.register_buffer({PREPROCESSING_BUFFERS[2]!r}, torch.tensor("
        f"{_floats(inv_std)}).reshape(1, -1, 1, 1), persistent=False)",
    ]
    submodules: dict[str, str] = {}  # layer -> the expression calling its submodule
    containers: set[str] = set()  # dotted prefixes (block instances, repeats) made so far
    for step in steps:
        exported = exporter_for(TORCH_EXPORTERS, step, "PyTorch",
                                "convtrain/export/torch_code.py")(step)
        *parents, leaf = step.name.split(".")
        owner = "self"
        for depth, segment in enumerate(parents):  # a block's layers live in nested modules
            _check_segment(step, segment, top=depth == 0)
            prefix = ".".join(parents[:depth + 1])
            if prefix not in containers:
                containers.add(prefix)
                lines.append(f"        {_assignment(owner, segment, 'nn.Module()')}")
            owner = _member(owner, segment)
        if isinstance(exported, Inline):
            continue
        _check_segment(step, leaf, top=not parents)
        lines.append(f"        {_assignment(owner, leaf, exported)}  "
                     f"# -> {_shape(step.output_shape)}")
        submodules[step.name] = _member(owner, leaf)
    lines += [
        "",
        "    def forward(self, pixels: torch.Tensor) -> torch.Tensor:",
        f'        """Raw pixels (N, {channels}, {height}, {width}) -> logits '
        f'(N, {", ".join(map(str, model.output_shape))})."""',
        f"        x = (pixels / self.{PREPROCESSING_BUFFERS[0]} - self.{PREPROCESSING_BUFFERS[1]})"
        f" * self.{PREPROCESSING_BUFFERS[2]}",
        *_forward_lines(model, steps, submodules),
        "",
    ]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class TorchExport:
    """What :func:`write_torch_export` wrote, and its check (None when not checked)."""

    source: Path  # model.py
    weights: Path  # model.safetensors
    class_name: str
    check: LogitCheck | None = None


def _require_torch(purpose: str) -> Any:
    return require("torch", purpose, command="pip install torch")


def _instantiate(source: str, class_name: str, weights: Mapping[str, Any],
                 filename: str = SOURCE_FILE) -> Any:
    """Run ``source`` (a generated model.py), build its class and load ``weights`` (torch
    tensors, strictly); the module in eval mode."""
    namespace: dict[str, Any] = {"__name__": "convtrain_torch_export"}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - our own generated code
    module = namespace[class_name]()
    module.load_state_dict(dict(weights))
    return module.eval()


def _check(torch: Any, module: Any, model: Model, preprocessing: Preprocessing,
           raw_batch: Any, tolerance: float) -> LogitCheck:
    batch = checked_raw_batch(model, raw_batch)
    with torch.no_grad():
        exported = module(torch.from_numpy(batch)).numpy()
    return LogitCheck.compare("PyTorch", exported, reference_logits(model, preprocessing, batch),
                              tolerance)


def write_torch_export(model: Model, directory: str | os.PathLike, *,
                       preprocessing: Preprocessing, verify_batch: Any = None,
                       tolerance: float = TOLERANCE) -> TorchExport:
    """Write ``directory/model.py`` (:func:`torch_module_source`) and
    ``directory/model.safetensors`` (the model's state_dict, float32), each atomically.

    Args:
        verify_batch: raw pixels ``(N, C, H, W)``: before anything is written, PyTorch runs the
            code with the weights on them and its logits must agree with convtrain's within
            ``tolerance`` (x the largest |logit| when above 1; needs torch; None: no check,
            and torch is not needed).

    Raises:
        ConfigError: see :func:`torch_module_source`; torch missing for the check; a failed
            check (one line; nothing is written).
        OSError: a file cannot be written (``filename`` names it).
    """
    from safetensors.numpy import save  # noqa: PLC0415 - a core dependency, loaded on use

    source = torch_module_source(model, preprocessing=preprocessing)
    tensors = {name: np.ascontiguousarray(value, dtype=np.float32)
               for name, value in model.state_dict().items()}
    weights = save(tensors, metadata={"format": "pt"})
    directory = Path(directory)
    class_name = torch_class_name(model)
    check = None
    if verify_batch is not None:
        torch = _require_torch("check the PyTorch export")
        from safetensors.torch import load  # noqa: PLC0415 - needs torch

        module = _instantiate(source, class_name, load(weights))
        check = _check(torch, module, model, preprocessing, verify_batch, tolerance)
        if not check.passed:
            raise check.failure("the PyTorch module", f"nothing was written to {directory}")
    export = TorchExport(directory / SOURCE_FILE, directory / WEIGHTS_FILE, class_name, check)
    atomic_write_bytes(export.weights, weights)
    atomic_write_text(export.source, source)
    return export


def load_torch_export(export: TorchExport) -> Any:
    """The written module, built from ``model.py`` with ``model.safetensors`` loaded (strict),
    in eval mode. Needs torch.

    Raises:
        ConfigError: torch is not installed.
    """
    _require_torch("run the PyTorch export")
    from safetensors.torch import load_file  # noqa: PLC0415 - needs torch

    return _instantiate(export.source.read_text(), export.class_name,
                        load_file(str(export.weights)), filename=str(export.source))


def verify_torch_export(export: TorchExport, model: Model, preprocessing: Preprocessing,
                        raw_batch: Any) -> float:
    """Max abs difference between the written module's logits on ``raw_batch`` (raw pixels
    ``(N, C, H, W)``) and convtrain's ``model.forward(preprocessing.apply(raw_batch),
    training=False)``; ``inf`` when anything is not finite. Needs torch."""
    torch = _require_torch("run the PyTorch export")
    return _check(torch, load_torch_export(export), model, preprocessing, raw_batch,
                  TOLERANCE).difference


__all__ = ["TORCH_EXPORTERS", "TorchExport", "load_torch_export", "torch_class_name",
           "torch_exporter", "torch_module_source", "verify_torch_export", "write_torch_export"]
