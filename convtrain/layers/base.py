"""The Layer base class and the layer registry.

A layer holds parameters, their gradients and whatever its backward pass needs from the
forward pass (the cache). It never updates its own weights: optimizers do that, reading
``params`` and ``grads``.
"""
from __future__ import annotations

from typing import Any, ClassVar

from convtrain.registry import Registry

#: ``@LAYERS.register("conv2d")`` registers a Layer subclass under its YAML ``type`` name.
LAYERS: Registry[type["Layer"]] = Registry("layer type")

Shape = tuple[int, ...]  # per-sample shape, e.g. (C, H, W) or (features,)


class Layer:
    """Base class of every layer.

    Subclasses are built by :func:`convtrain.layers.build_layer` as
    ``cls.from_config(name, spec, input_shape, defaults)``.

    Attributes:
        name: the layer's key in the model config (``"conv1"``); used in messages and
            in ``state_dict`` names (``"conv1.weight"``).
        params: parameter arrays by short name (``{"weight": W, "bias": b}``).
        grads: gradients with the same keys and shapes, filled by :meth:`backward`.
        trainable: False freezes the layer (the optimizer skips it; grads are still computed).
        weight_decay_mult: per-layer multiplier on the global L2 weight decay (Caffe's
            ``decay_mult``); biases and BatchNorm parameters are never decayed.
        input_shape / output_shape: per-sample shapes (without the batch axis).
    """

    #: config keys this layer type accepts besides ``type`` (used to reject typos).
    config_keys: ClassVar[tuple[str, ...]] = ()
    #: params that L2 weight decay applies to.
    decayed_params: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(self, name: str, input_shape: Shape):
        self.name = name
        self.input_shape = tuple(int(s) for s in input_shape)
        self.output_shape: Shape = self.input_shape
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self.buffers: dict[str, Any] = {}  # non-trainable state saved in state_dict (BN stats)
        self.trainable = True
        self.weight_decay_mult = 1.0

    # --- computation -------------------------------------------------------------------
    def forward(self, x, training: bool = True):
        """``x``: ``(N, *input_shape)`` -> ``(N, *output_shape)``."""
        raise NotImplementedError

    def backward(self, dy):
        """``dy``: ``(N, *output_shape)`` -> ``dx`` ``(N, *input_shape)``; fills ``grads``."""
        raise NotImplementedError

    # --- description (model.summary) -----------------------------------------------------
    def flops(self) -> int:
        """Forward multiply-adds x2 (i.e. FLOPs) for ONE sample."""
        return 0

    def receptive_field_step(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``((kh, sh, dh), (kw, sw, dw))``: kernel, stride, dilation along H and W, for the
        receptive-field arithmetic of ``summary()``.

        Layers that do not look at neighbours (ReLU, Dropout, Flatten, Dense...) return ones.
        """
        return ((1, 1, 1), (1, 1, 1))

    def describe(self) -> str:
        """A short human description of the hyperparameters (for ``summary()``)."""
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
