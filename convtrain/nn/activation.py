"""Elementwise activation layers: ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``.

They accept any per-sample shape and keep it. FLOPs per sample are counted as 1 per element
(``leaky_relu``: 2, a comparison and a multiply; ``tanh``/``sigmoid``: 1 transcendental).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar, Mapping

from convtrain.ops.activations import (leaky_relu_backward, leaky_relu_forward, sigmoid_backward,
                                       sigmoid_forward, tanh_backward, tanh_forward)
from convtrain.ops.fast import relu_backward, relu_forward
from convtrain.errors import ConfigError
from convtrain.nn.base import LAYERS, Shape
from convtrain.nn.common import ConcreteLayer
from convtrain.nn.spec import LayerSpec


class _Activation(ConcreteLayer):
    """An elementwise function with engine ``forward_fn(x) -> (y, cache)`` and
    ``backward_fn(dy, cache) -> dx``."""

    layer_type: ClassVar[str] = ""
    flops_per_element: ClassVar[int] = 1
    forward_fn: ClassVar[Callable[..., Any]]
    backward_fn: ClassVar[Callable[..., Any]]

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.cache = None

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "_Activation":
        """No YAML keys."""
        where = f"model.layers.{name}"
        LayerSpec(where, cls.layer_type, spec, cls.config_keys)
        return cls(name=name, where=where).build(input_shape)

    def _forward(self, x):
        return type(self).forward_fn(x)

    def forward(self, x, training: bool = True):
        """Any ``(N, ...)`` -> same shape."""
        y, self.cache = self._forward(x)
        return y

    def backward(self, dy):
        if self.cache is None:
            raise ConfigError(f"{self.where}: backward() called before forward()")
        dx = type(self).backward_fn(dy, self.cache)
        self.cache = None
        return dx

    def flops(self, input_shape: Shape) -> int:
        count = 1
        for size in input_shape:
            count *= int(size)
        return self.flops_per_element * count


@LAYERS.register("relu")
class ReLU(_Activation):
    """``max(x, 0)``, like ``torch.nn.ReLU`` (gradient 0 at exactly 0)."""

    layer_type = "relu"
    forward_fn = staticmethod(relu_forward)
    backward_fn = staticmethod(relu_backward)


@LAYERS.register("tanh")
class Tanh(_Activation):
    """``tanh(x)``, like ``torch.nn.Tanh``."""

    layer_type = "tanh"
    forward_fn = staticmethod(tanh_forward)
    backward_fn = staticmethod(tanh_backward)


@LAYERS.register("sigmoid")
class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``, like ``torch.nn.Sigmoid`` (overflow-free)."""

    layer_type = "sigmoid"
    forward_fn = staticmethod(sigmoid_forward)
    backward_fn = staticmethod(sigmoid_backward)


@LAYERS.register("leaky_relu")
class LeakyReLU(_Activation):
    """``x`` where positive, ``negative_slope·x`` elsewhere, like ``torch.nn.LeakyReLU``.

    YAML: ``{type: leaky_relu, negative_slope: 0.01}``.
    """

    layer_type = "leaky_relu"
    config_keys = ("negative_slope",)
    flops_per_element = 2
    backward_fn = staticmethod(leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01, name: str | None = None, *,
                 where: str | None = None):
        super().__init__(name, where=where)
        args = LayerSpec(self.where, self.layer_type, {"negative_slope": negative_slope},
                         self.config_keys)
        self.negative_slope = args.number("negative_slope", 0.01, expected="a finite number")

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "LeakyReLU":
        """YAML key: ``negative_slope`` (default 0.01)."""
        where = f"model.layers.{name}"
        cfg = LayerSpec(where, cls.layer_type, spec, cls.config_keys)
        slope = cfg.number("negative_slope", 0.01, expected="a finite number")
        return cls(slope, name=name, where=where).build(input_shape)

    def _forward(self, x):
        return leaky_relu_forward(x, self.negative_slope)

    def describe(self) -> str:
        return f"slope {self.negative_slope:g}"
