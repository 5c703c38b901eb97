"""The Layer base class and the layer registry.

A layer holds parameters, their gradients and whatever its backward pass needs from the
forward pass (the cache). It never updates its own weights: optimizers do that, reading
``params`` and ``grads``.

Each layer class declares its settings once, as ``options`` (see :mod:`convtrain.nn.options`);
the constructor's checks, the accepted config keys, defaults, error messages and
:meth:`Layer.from_config` all come from that declaration. What the rest of convtrain may rely on
about a layer kind is said by capability flags (``has_spatial_kernels``, ...), never by testing
its class.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from convtrain.errors import ConfigError, InternalError
from convtrain.nn.init import initialize
from convtrain.nn.options import Option, key_path, reject_unknown_keys
from convtrain.registry import Registry

#: every layer type by its YAML ``type`` name (filled by :func:`register_layer`).
LAYERS: Registry[type["Layer"]] = Registry("layer type")

Shape = tuple[int, ...]  # per-sample shape, e.g. (C, H, W) or (features,)

#: constructor arguments that are machinery, not layer options: naming, error messages,
#: random streams, dtype and scratch memory.
MACHINERY_ARGUMENTS = ("self", "name", "where", "rng", "dtype", "seed", "max_workspace_mb")


def register_layer(type_name: str) -> Callable[[type["Layer"]], type["Layer"]]:
    """Class decorator: ``@register_layer("conv2d")`` makes the class the YAML ``type: conv2d``."""

    def decorate(cls: type[Layer]) -> type[Layer]:
        cls.type_name = type_name
        return LAYERS.register(type_name)(cls)

    return decorate


class Layer:
    """Base class of every layer.

    Public construction mirrors PyTorch (``Conv2d(in_channels, out_channels, kernel_size, ...)``);
    the registry builds layers from YAML with :meth:`from_config`, inferring ``in_channels`` /
    ``in_features`` from the previous layer's output shape.

    Attributes:
        name: the layer's key in the model config (``"conv1"``); used in ``state_dict`` names
            (``"conv1.weight"``).
        where: prefix of this layer's error messages: ``"model.layers.conv1"`` when built from a
            config, ``"layer 'conv2d'"`` when constructed directly.
        input_shape: per-sample input shape once :meth:`build` has run, else ``None``.
        params: parameter arrays by short name (``{"weight": W, "bias": b}``).
        grads: gradients with the same keys and shapes, written by :meth:`backward`.
        buffers: non-trainable state saved in ``state_dict`` (BatchNorm running statistics).
        trainable: False freezes the layer (optimizers skip it; grads are still computed).
        weight_decay_mult: per-layer multiplier on the global L2 weight decay (Caffe's
            ``decay_mult``). Only the params named in ``decayed_params`` are decayed.
    """

    #: the YAML ``type`` name (set by :func:`register_layer`).
    type_name: ClassVar[str] = ""
    #: this layer type's settings (see :mod:`convtrain.nn.options`); constructor defaults are
    #: filled in from the signature when the class is defined.
    options: ClassVar[tuple[Option, ...]] = ()
    #: the per-sample input a config may feed this layer: rank (None: any), how it reads in
    #: messages, and a hint for the usual mistake.
    input_rank: ClassVar[int | None] = None
    input_layout: ClassVar[str] = ""
    input_hint: ClassVar[str] = ""
    #: params that L2 weight decay applies to (never biases or BatchNorm scales).
    decayed_params: ClassVar[tuple[str, ...]] = ("weight",)
    #: True when ``backward(dy, input_grad=False)`` can skip computing ``dx`` (a model's first
    #: layer never needs it; for a convolution that saves a GEMM and a col2im).
    can_skip_input_grad: ClassVar[bool] = False

    # --- capabilities: what the rest of convtrain may rely on, instead of testing classes ---
    #: ``params["weight"]`` is a bank of spatial kernels ``(F, C/groups, kh, kw)`` and the
    #: output ``(N, F, H, W)`` its feature maps: visuals show both (conv layers).
    has_spatial_kernels: ClassVar[bool] = False
    #: training normalises with statistics of the batch, so a batch with a single value per
    #: channel cannot train (batch norm): the trainer's drop-last policy looks at this.
    uses_batch_statistics: ClassVar[bool] = False
    #: the config key that sets how many output features the layer has (dense: ``"units"``);
    #: the last such layer makes the logits. None for layers whose width follows their input.
    width_key: ClassVar[str | None] = None
    #: every output sees every input position (dense, global pooling): ``summary()`` reports
    #: the whole input as receptive field from this layer on.
    global_receptive_field: ClassVar[bool] = False
    #: an elementwise, monotonically non-decreasing map f with f(max(a)) == max(f(a)) (ReLU):
    #: the model may run it after a following max-pooling layer, on fewer elements.
    commutes_with_max_pool: ClassVar[bool] = False
    #: the layer takes the maximum of each window (max pooling): see ``commutes_with_max_pool``.
    takes_window_maximum: ClassVar[bool] = False
    #: the layer draws random numbers in training (dropout masks): ``build_model`` gives it an
    #: independent stream derived from the run seed through ``seed_rng(seed)``.
    uses_random_stream: ClassVar[bool] = False
    #: the output is a probability distribution (softmax), not logits: the trainer refuses it as
    #: a model's output, since its loss applies a softmax of its own.
    outputs_probabilities: ClassVar[bool] = False
    #: the layer joins several inputs (add, concat): ``forward`` takes a list of batches,
    #: ``backward`` returns a list of gradients (one per input, in order), and its input shape
    #: is a tuple of per-sample shapes (see :mod:`convtrain.nn.layers.merge`).
    merges_inputs: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Fill each constructor option's default from the ``__init__`` signature (the one place
        it is written) and insist that options and signature agree."""
        super().__init_subclass__(**kwargs)
        parameters = inspect.signature(cls.__init__).parameters
        declared = {option.arg for option in cls.options if option.constructor}
        for option in cls.options:
            if option.constructor and option.arg not in parameters:
                raise TypeError(f"{cls.__name__}: option '{option.key}' names constructor "
                                f"argument '{option.arg}', which __init__ does not take")
        undeclared = [p for p in parameters if p not in declared and p not in MACHINERY_ARGUMENTS
                      and parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                     inspect.Parameter.VAR_KEYWORD)]
        if undeclared:
            raise TypeError(f"{cls.__name__}: constructor arguments {undeclared} are not "
                            f"declared in {cls.__name__}.options")
        cls.options = tuple(
            dataclasses.replace(option, default=parameters[option.arg].default)
            if option.constructor else option for option in cls.options)

    @classmethod
    def option_default(cls, key: str) -> Any:
        """The declared default of option ``key`` (from the public signature)."""
        return next(option.default for option in cls.options if option.key == key)

    def __init__(self, name: str | None = None, where: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.where = where or f"layer '{self.name}'"
        self.input_shape: Shape | None = None
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.trainable = True
        self.weight_decay_mult = 1.0

    def set_options(self, arguments: Mapping[str, Any]) -> None:
        """Check the constructor's arguments against ``options`` and keep each one as an
        attribute (``option.attr``). Call it with ``locals()`` at the top of ``__init__``.

        Raises:
            ConfigError: ``layer 'conv2d' argument 'out_channels': must be >= 1, got 0`` (or the
                config key's path when built from a config).
        """
        for option in self.options:
            if option.constructor:
                setattr(self, option.attr, option.check(option.label(self.where),
                                                        arguments[option.arg]))

    # --- building from a config ----------------------------------------------------------
    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "Layer":
        """Build ``model.layers.<name>`` from its mapping (without ``type``) for ``input_shape``.

        Every key of ``spec`` is checked against ``options`` (unknown keys get a did-you-mean),
        options marked with ``input_axis`` are read from ``input_shape`` and ``defaults`` gives
        the model-wide settings: ``init`` (initializer name), ``rng`` (NumPy Generator for
        initial weights), ``dtype``.

        Raises:
            ConfigError: naming ``model.layers.<name>.<key>``, the value and, for shape
                problems, ``input_shape``.
        """
        where = f"model.layers.{name}"
        reject_unknown_keys(where, cls.type_name, spec, cls.options)
        arguments: dict[str, Any] = {}  # constructor arguments
        settings: dict[str, Any] = {}  # config-only options, set by build()
        for option in cls.options:
            if option.config:
                given = spec.get(option.key)
                if given is None and option.model_default:
                    given = defaults.get(option.model_default)
                value = option.check(option.label(where), given)
                if option.constructor:
                    arguments[option.arg] = value
                else:
                    settings[option.attr] = value
        cls.check_input_rank(where, input_shape)
        arguments.update({o.arg: int(input_shape[o.input_axis]) for o in cls.options
                          if o.input_axis is not None})
        cls.check_arguments(where, arguments, input_shape)
        accepted = inspect.signature(cls).parameters
        machinery = {"rng": defaults.get("rng"), "dtype": defaults.get("dtype", np.float32)}
        arguments.update({k: v for k, v in machinery.items() if k in accepted})
        layer = cls(**arguments, name=name, where=where)
        return layer.build(input_shape, layer_settings=settings)

    @classmethod
    def check_input_rank(cls, where: str, input_shape: Shape) -> None:
        """Raise unless a config may feed this layer a per-sample input of this rank."""
        if cls.input_rank is not None and len(input_shape) != cls.input_rank:
            hint = f"; {cls.input_hint}" if cls.input_hint else ""
            raise ConfigError(f"{where}: {cls.type_name} expects a {cls.input_layout}, got shape "
                              f"{tuple(input_shape)}{hint}")

    @classmethod
    def check_arguments(cls, where: str, arguments: Mapping[str, Any], input_shape: Shape) -> None:
        """Checks across several options that need the input shape (conv: ``groups`` must
        divide the inferred channels); the default has none."""

    def build(self, input_shape: Shape, where: str | None = None,
              layer_settings: Mapping[str, Any] | None = None) -> "Layer":
        """Validate ``input_shape`` (per sample) and remember it; returns ``self``.

        ``layer_settings`` sets config-only options (``trainable``, ``weight_decay_mult``).

        Raises:
            ConfigError: the layer cannot take this shape (message names ``where``).
        """
        if where is not None:
            self.where = where
        shape = tuple(int(s) for s in input_shape)
        self.compute_output_shape(shape)  # raises for impossible shapes
        self.input_shape = shape
        for attribute, value in (layer_settings or {}).items():
            setattr(self, attribute, value)
        return self

    # --- computation -------------------------------------------------------------------
    def forward(self, x, training: bool = True):
        """``x``: ``(N, *input_shape)`` -> ``(N, *output_shape)``."""
        raise NotImplementedError

    def seed_rng(self, seed: int | None) -> None:
        """(Re)seed the layer's random stream (layers with ``uses_random_stream`` override)."""
        raise InternalError(f"{self.where}: {type(self).__name__} draws no random numbers")

    def backward(self, dy):
        """``dy``: ``(N, *output_shape)`` -> ``dx`` ``(N, *input_shape)``; fills ``grads``."""
        raise NotImplementedError

    def require_cache(self, cache: Any) -> Any:
        """``cache`` (what forward kept for backward), or InternalError when there is none:
        backward without a forward first, or twice after one forward."""
        if cache is None:
            raise InternalError(f"{self.where}: backward() called before forward()")
        return cache

    # --- weights -----------------------------------------------------------------------
    def init_weight_and_bias(self, weight_shape: tuple[int, ...], init: str, use_bias: bool,
                             rng: np.random.Generator, dtype: Any) -> None:
        """``weight`` drawn by initializer ``init``, ``bias`` zeros (when used), zero grads.

        Host NumPy arrays; :meth:`to_backend` moves them to the GPU when needed.
        """
        self.params["weight"] = initialize(init, weight_shape, rng=rng, dtype=dtype,
                                           where=key_path(self.where, "init"))
        self.grads["weight"] = np.zeros(weight_shape, dtype=dtype)
        if use_bias:
            self.params["bias"] = np.zeros(weight_shape[0], dtype=dtype)
            self.grads["bias"] = np.zeros(weight_shape[0], dtype=dtype)

    # --- shapes and description (model.summary) ---------------------------------------
    def output_shape(self, input_shape: Shape | None = None) -> Shape:
        """Per-sample output shape for ``input_shape`` (default: the built input shape).

        Raises:
            ConfigError: naming the layer, for a shape it cannot take.
            InternalError: no ``input_shape`` given before :meth:`build`.
        """
        if input_shape is None:
            if self.input_shape is None:
                raise InternalError(f"{self.where}: output_shape() needs an input shape until "
                                    f"the layer is built")
            input_shape = self.input_shape
        return self.compute_output_shape(tuple(int(s) for s in input_shape))

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Subclasses override; the default keeps the shape (pointwise layers)."""
        return tuple(input_shape)

    def check_leading_size(self, input_shape: Shape, size: int, what: str) -> None:
        """Raise unless the per-sample shape's first axis is ``size`` (``what``: "input
        channels", "input features", ...), naming the layer and the shape it got."""
        if input_shape[0] != size:
            raise ConfigError(f"{self.where}: expects {size} {what}, got per-sample input "
                              f"shape {tuple(input_shape)}")

    def check_batch(self, x: Any, rank: int, axis_size: tuple[int, int] | None = None,
                    what: str = "") -> None:
        """Cheap forward-time check of a batch ``x``: ``rank`` per-sample dims and, when
        ``axis_size=(axis, size)`` is given, ``x.shape[axis] == size``.

        Raises:
            InternalError: a batch of another shape: the model checks its input, so only a
                direct call (or a bug) gets here.
        """
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != rank + 1 or (axis_size and shape[axis_size[0]] != axis_size[1]):
            hint = f"; {self.input_hint}" if len(shape) != rank + 1 and self.input_hint else ""
            raise InternalError(f"{self.where}: expects batches of per-sample shape {what}, "
                                f"got a batch of shape {shape} (per-sample {shape[1:]}){hint}")

    def flops(self, input_shape: Shape) -> int:
        """Forward FLOPs (a multiply-add counts 2) for ONE sample of ``input_shape``."""
        return 0

    def receptive_field_step(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``((kh, sh, dh), (kw, sw, dw))``: kernel, stride, dilation along H and W, for the
        receptive-field arithmetic of ``summary()``. Pointwise layers return ones.
        """
        return ((1, 1, 1), (1, 1, 1))

    def describe(self) -> str:
        """A short description of the hyperparameters (``"5x5, s1, p2"``) for ``summary()``."""
        return ""

    def num_params(self) -> int:
        return int(sum(int(p.size) for p in self.params.values()))

    def to_backend(self, backend) -> None:
        """Move params, grads and buffers onto ``backend`` (NumPy <-> CuPy)."""
        for d in (self.params, self.grads, self.buffers):
            for k, v in d.items():
                d[k] = backend.asarray(v)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, {self.describe()})"
