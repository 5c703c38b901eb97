"""The Layer base class and the layer registry.

A layer holds parameters, their gradients and whatever its backward pass needs from the
forward pass (the cache). It never updates its own weights: optimizers do that, reading
``params`` and ``grads``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

from convtrain.registry import Registry

#: ``@LAYERS.register("conv2d")`` registers a Layer subclass under its YAML ``type`` name.
LAYERS: Registry[type["Layer"]] = Registry("layer type")

Shape = tuple[int, ...]  # per-sample shape, e.g. (C, H, W) or (features,)


class Layer:
    """Base class of every layer.

    Public construction mirrors PyTorch (``Conv2d(in_channels, out_channels, kernel_size, ...)``);
    the registry builds layers from YAML with :meth:`from_config`, inferring ``in_channels`` /
    ``in_features`` from the previous layer's output shape.

    Attributes:
        name: the layer's key in the model config (``"conv1"``); used in error messages and in
            ``state_dict`` names (``"conv1.weight"``).
        params: parameter arrays by short name (``{"weight": W, "bias": b}``).
        grads: gradients with the same keys and shapes, written by :meth:`backward`.
        buffers: non-trainable state saved in ``state_dict`` (BatchNorm running statistics).
        trainable: False freezes the layer (optimizers skip it; grads are still computed).
        weight_decay_mult: per-layer multiplier on the global L2 weight decay (Caffe's
            ``decay_mult``). Only the params named in ``decayed_params`` are decayed.
    """

    #: config keys this layer type accepts besides ``type`` (typos are rejected against it).
    config_keys: ClassVar[tuple[str, ...]] = ()
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

    def __init__(self, name: str | None = None):
        self.name = name or type(self).__name__.lower()
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}
        self.trainable = True
        self.weight_decay_mult = 1.0

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "Layer":
        """Build from a YAML mapping (without ``type``) given the per-sample input shape.

        ``defaults`` carries model-wide settings: ``init`` (global initializer name),
        ``rng`` (NumPy Generator for init), ``dtype``.
        Raises ConfigError naming ``name``, the key, the value and ``input_shape``.
        """
        raise NotImplementedError

    # --- computation -------------------------------------------------------------------
    def forward(self, x, training: bool = True):
        """``x``: ``(N, *input_shape)`` -> ``(N, *output_shape)``."""
        raise NotImplementedError

    def backward(self, dy):
        """``dy``: ``(N, *output_shape)`` -> ``dx`` ``(N, *input_shape)``; fills ``grads``."""
        raise NotImplementedError

    # --- shapes and description (model.summary) ---------------------------------------
    def output_shape(self, input_shape: Shape) -> Shape:
        """Per-sample output shape; raises ConfigError naming the layer for impossible shapes."""
        return tuple(input_shape)

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
