"""Flatten layer (``type: flatten``): ``(N, C, H, W)`` -> ``(N, C·H·W)``."""
from __future__ import annotations

import math

from convtrain.errors import InternalError
from convtrain.nn.base import Layer, Shape, register_layer


@register_layer("flatten")
class Flatten(Layer):
    """Flatten every sample to a vector in C order (channel, then row, then column), exactly
    like ``torch.nn.Flatten``, so a following Dense's weights load into ``nn.Linear`` as is.

    A reshape of a contiguous array: no copy, no FLOPs. No YAML keys.
    """

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.batch_shape: tuple[int, ...] | None = None

    def forward(self, x, training: bool = True):
        """``(N, *shape)`` -> ``(N, prod(shape))``."""
        if getattr(x, "ndim", 0) < 1:
            raise InternalError(f"{self.where}: expects a batch (N, ...), got {type(x).__name__} "
                              f"of shape {getattr(x, 'shape', None)}")
        self.batch_shape = tuple(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        """``(N, prod(shape))`` -> ``(N, *shape)``."""
        dx = dy.reshape(self.require_cache(self.batch_shape))
        self.batch_shape = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)
