"""Flatten layer (``type: flatten``): ``(N, C, H, W)`` -> ``(N, C·H·W)``."""
from __future__ import annotations

import math
from typing import Any, Mapping

from convtrain.errors import ConfigError
from convtrain.nn.base import LAYERS, Shape
from convtrain.nn.common import ConcreteLayer
from convtrain.nn.spec import LayerSpec


@LAYERS.register("flatten")
class Flatten(ConcreteLayer):
    """Flatten every sample to a vector in C order (channel, then row, then column), exactly
    like ``torch.nn.Flatten``, so a following Dense's weights load into ``nn.Linear`` as is.

    A reshape of a contiguous array: no copy, no FLOPs. No YAML keys.
    """

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.batch_shape: tuple[int, ...] | None = None

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "Flatten":
        where = f"model.layers.{name}"
        LayerSpec(where, "flatten", spec, cls.config_keys)
        return cls(name=name, where=where).build(input_shape)

    def forward(self, x, training: bool = True):
        """``(N, *shape)`` -> ``(N, prod(shape))``."""
        if getattr(x, "ndim", 0) < 1:
            raise ConfigError(f"{self.where}: expects a batch (N, ...), got {type(x).__name__} "
                              f"of shape {getattr(x, 'shape', None)}")
        self.batch_shape = tuple(x.shape)
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        """``(N, prod(shape))`` -> ``(N, *shape)``."""
        if self.batch_shape is None:
            raise ConfigError(f"{self.where}: backward() called before forward()")
        dx = dy.reshape(self.batch_shape)
        self.batch_shape = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)
