"""Elementwise activation layers: ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``elu``,
``silu``, ``gelu``.

They accept any per-sample shape and keep it. FLOPs per sample count each arithmetic operation
and each transcendental function (exp, tanh, erf) as 1 per element: ``relu`` 1, ``leaky_relu``
2 (a comparison and a multiply), ``tanh``/``sigmoid`` 1, ``elu`` 3 (a comparison, expm1, a
multiply), ``silu`` 2 (a sigmoid and a multiply), ``gelu`` 4 (``x · erfc(-x/√2) / 2``; 9 with
``approximate: tanh``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

from convtrain.errors import ConfigError
from convtrain.ops.activations import (GELU_APPROXIMATIONS, elu_backward, elu_forward,
                                       gelu_backward, gelu_forward, leaky_relu_backward,
                                       leaky_relu_forward, sigmoid_backward, sigmoid_forward,
                                       silu_backward, silu_forward, tanh_backward, tanh_forward)
from convtrain.ops.fast import relu_backward, relu_forward
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import Option
from convtrain.validate import did_you_mean


class _Activation(Layer):
    """A shape-keeping function with engine ``forward_fn(x) -> (y, cache)`` and
    ``backward_fn(dy, cache) -> dx`` and ``flops_per_element`` FLOPs per element: the
    elementwise activations below, and ``softmax`` (nn/layers/softmax.py)."""

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
        return self.flops_per_element * math.prod(int(size) for size in input_shape)


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


@register_layer("elu")
class ELU(_Activation):
    """``x`` where positive, ``alpha·(exp(x) - 1)`` elsewhere, like ``torch.nn.ELU``: smooth
    for ``alpha = 1``, saturating at ``-alpha`` for very negative inputs.

    YAML: ``{type: elu, alpha: 1.0}``.
    """

    options = (Option("alpha", "number", "the value -alpha that negative inputs saturate at"),)
    flops_per_element = 3
    backward_fn = staticmethod(elu_backward)

    def __init__(self, alpha: float = 1.0, name: str | None = None, *,
                 where: str | None = None):
        super().__init__(name, where=where)
        self.set_options(locals())

    def _forward(self, x):
        return elu_forward(x, self.alpha)

    def describe(self) -> str:
        return f"alpha {self.alpha:g}"


@register_layer("silu")
class SiLU(_Activation):
    """``x · sigmoid(x)`` (SiLU, also called swish), like ``torch.nn.SiLU``."""

    flops_per_element = 2
    forward_fn = staticmethod(silu_forward)
    backward_fn = staticmethod(silu_backward)


@register_layer("gelu")
class GELU(_Activation):
    """``x · Φ(x)``, ``Φ`` the standard normal CDF, like ``torch.nn.GELU``.

    ``approximate: none`` (the default, PyTorch's) is exact: ``Φ(x) = erfc(-x/√2) / 2``, with
    the erfc evaluated to float rounding by :mod:`convtrain.ops.special`. ``approximate: tanh``
    uses ``Φ(x) ≈ (1 + tanh(√(2/π)·(x + 0.044715·x³))) / 2`` (PyTorch's
    ``GELU(approximate="tanh")``), ~4x cheaper on a CPU (~12 instead of ~50 ms per million
    float32 elements on 2 cores); the two differ by < 5e-4.

    YAML: ``{type: gelu}`` or ``{type: gelu, approximate: tanh}``.
    """

    options = (Option("approximate", "name", "'none' (exact, with erf) or 'tanh'"),)
    backward_fn = staticmethod(gelu_backward)

    def __init__(self, approximate: str = "none", name: str | None = None, *,
                 where: str | None = None):
        super().__init__(name, where=where)
        self.set_options(locals())
        if self.approximate not in GELU_APPROXIMATIONS:
            label = self.options[0].label(self.where)
            raise ConfigError(f"{label}: expected one of "
                              f"{', '.join(map(repr, GELU_APPROXIMATIONS))}, got "
                              f"{self.approximate!r}"
                              f"{did_you_mean(self.approximate, GELU_APPROXIMATIONS)}")
        self.flops_per_element = 9 if self.approximate == "tanh" else 4

    def _forward(self, x):
        return gelu_forward(x, self.approximate)

    def describe(self) -> str:
        return "tanh approximation" if self.approximate == "tanh" else ""
