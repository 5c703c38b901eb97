"""Elementwise activation layers: ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``.

They accept any per-sample shape and keep it. FLOPs per sample are counted as 1 per element
(``leaky_relu``: 2, a comparison and a multiply; ``tanh``/``sigmoid``: 1 transcendental).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

from convtrain.ops.activations import (leaky_relu_backward, leaky_relu_forward, sigmoid_backward,
                                       sigmoid_forward, tanh_backward, tanh_forward)
from convtrain.ops.fast import relu_backward, relu_forward
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import Option


class _Activation(Layer):
    """An elementwise function with engine ``forward_fn(x) -> (y, cache)`` and
    ``backward_fn(dy, cache) -> dx``."""

    flops_per_element: ClassVar[int] = 1
    forward_fn: ClassVar[Callable[..., Any]]
    backward_fn: ClassVar[Callable[..., Any]]

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.cache = None

    def _forward(self, x):
        return type(self).forward_fn(x)

    def forward(self, x, training: bool = True):
        """Any ``(N, ...)`` -> same shape."""
        y, self.cache = self._forward(x)
        return y

    def backward(self, dy):
        dx = type(self).backward_fn(dy, self.require_cache(self.cache))
        self.cache = None
        return dx

    def flops(self, input_shape: Shape) -> int:
        count = 1
        for size in input_shape:
            count *= int(size)
        return self.flops_per_element * count


@register_layer("relu")
class ReLU(_Activation):
    """``max(x, 0)``, like ``torch.nn.ReLU`` (gradient 0 at exactly 0)."""

    #: ``relu(max(window)) == max(relu(window))``, and the gradient reaches the same element
    #: (windows with no positive value get zero either way): exact, not approximate.
    commutes_with_max_pool = True
    forward_fn = staticmethod(relu_forward)
    backward_fn = staticmethod(relu_backward)


@register_layer("tanh")
class Tanh(_Activation):
    """``tanh(x)``, like ``torch.nn.Tanh``."""

    forward_fn = staticmethod(tanh_forward)
    backward_fn = staticmethod(tanh_backward)


@register_layer("sigmoid")
class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``, like ``torch.nn.Sigmoid`` (overflow-free)."""

    forward_fn = staticmethod(sigmoid_forward)
    backward_fn = staticmethod(sigmoid_backward)


@register_layer("leaky_relu")
class LeakyReLU(_Activation):
    """``x`` where positive, ``negative_slope·x`` elsewhere, like ``torch.nn.LeakyReLU``.

    YAML: ``{type: leaky_relu, negative_slope: 0.01}``.
    """

    options = (Option("negative_slope", "number", "slope for negative inputs"),)
    flops_per_element = 2
    backward_fn = staticmethod(leaky_relu_backward)

    def __init__(self, negative_slope: float = 0.01, name: str | None = None, *,
                 where: str | None = None):
        super().__init__(name, where=where)
        self.set_options(locals())

    def _forward(self, x):
        return leaky_relu_forward(x, self.negative_slope)

    def describe(self) -> str:
        return f"slope {self.negative_slope:g}"
