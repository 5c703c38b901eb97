"""Elementwise activations (``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``elu``, ``silu``,
``gelu``). Any input shape; outputs keep the input's shape and dtype.

Each ``*_forward`` returns ``(y, cache)`` and each ``*_backward(dy, cache)`` returns ``dx``.
Masks are applied by multiplication, never ``xp.where``: on random sign patterns NumPy's
``where`` is ~10x slower than a multiply by a boolean array. The threaded ReLU of the CPU is
in :mod:`convtrain.ops.fast.activations`.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_float
from convtrain.ops.special import erfc
from convtrain.errors import ConfigError


def relu_forward(x: Any) -> tuple[Any, Any]:
    """``max(x, 0)``; the cache is the boolean mask ``x > 0``."""
    require_float(x, "relu", "x")
    xp = array_module(x)
    return xp.maximum(x, x.dtype.type(0)), x > 0


def relu_backward(dy: Any, cache: Any) -> Any:
    """Pass ``dy`` where the input was positive (the gradient at exactly 0 is taken as 0)."""
    return dy * cache


def leaky_relu_forward(x: Any, negative_slope: float = 0.01) -> tuple[Any, Any]:
    """``x`` where positive, ``negative_slope * x`` elsewhere; the cache is the local slope
    (1 or ``negative_slope``) per element."""
    require_float(x, "leaky_relu", "x")
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, Real):
        raise ConfigError(f"leaky_relu: negative_slope must be a number, got {negative_slope!r}")
    slope = x.dtype.type(negative_slope)
    local_slope = (x > 0) * (1 - slope)  # 1 - slope where positive, else 0 ...
    local_slope += slope  # ... so 1 where positive, slope elsewhere
    return x * local_slope, local_slope


def leaky_relu_backward(dy: Any, cache: Any) -> Any:
    return dy * cache


def tanh_forward(x: Any) -> tuple[Any, Any]:
    """``tanh(x)``; the cache is the output, since ``tanh' = 1 - tanh^2``."""
    require_float(x, "tanh", "x")
    y = array_module(x).tanh(x)
    return y, y


def tanh_backward(dy: Any, cache: Any) -> Any:
    y = cache
    return dy * (1 - y * y)


def sigmoid_forward(x: Any) -> tuple[Any, Any]:
    """``1 / (1 + exp(-x))`` written as ``exp(min(x, 0)) / (1 + exp(-|x|))``: no ``exp`` sees a
    positive argument (no overflow) and tiny outputs for very negative ``x`` keep full
    relative precision."""
    require_float(x, "sigmoid", "x")
    xp = array_module(x)
    zero = x.dtype.type(0)
    y = xp.exp(xp.minimum(x, zero))
    y /= 1 + xp.exp(-xp.abs(x))
    return y, y


def sigmoid_backward(dy: Any, cache: Any) -> Any:
    y = cache
    return dy * y * (1 - y)


def elu_forward(x: Any, alpha: float = 1.0) -> tuple[Any, Any]:
    """``x`` where positive, ``alpha · (exp(x) - 1)`` elsewhere (``torch.nn.ELU``); the cache
    is the local slope: 1 where ``x > 0``, ``alpha · exp(x)`` elsewhere (also at 0, as in
    PyTorch). ``expm1`` keeps full precision near 0 and only sees ``min(x, 0)`` (no overflow)."""
    require_float(x, "elu", "x")
    if isinstance(alpha, bool) or not isinstance(alpha, Real):
        raise ConfigError(f"elu: alpha must be a number, got {alpha!r}")
    xp = array_module(x)
    alpha = x.dtype.type(alpha)
    positive = x > 0
    exp_m1 = xp.expm1(xp.minimum(x, x.dtype.type(0)))  # 0 where x > 0
    y = x * positive + alpha * exp_m1
    local_slope = (exp_m1 + 1) * alpha
    local_slope *= ~positive
    local_slope += positive
    return y, local_slope


def elu_backward(dy: Any, cache: Any) -> Any:
    return dy * cache


def silu_forward(x: Any) -> tuple[Any, Any]:
    """``x · sigmoid(x)`` (SiLU, "swish", ``torch.nn.SiLU``) with the overflow-free sigmoid;
    the cache is the local slope ``s · (1 + x · (1 - s))``, ``s = sigmoid(x)``."""
    require_float(x, "silu", "x")
    s, _ = sigmoid_forward(x)
    local_slope = x * (1 - s)
    local_slope += 1
    local_slope *= s
    return x * s, local_slope


def silu_backward(dy: Any, cache: Any) -> Any:
    return dy * cache


#: the ``approximate`` settings of GELU (PyTorch's names).
GELU_APPROXIMATIONS = ("none", "tanh")
_SQRT_HALF = 0.70710678118654752440  # 1/√2
_INV_SQRT_2PI = 0.39894228040143267794  # 1/√(2π)
_SQRT_2_OVER_PI = 0.79788456080286535588  # √(2/π)
_GELU_CUBIC = 0.044715


def gelu_forward(x: Any, approximate: str = "none") -> tuple[Any, Any]:
    """GELU, ``x · Φ(x)`` with ``Φ`` the standard normal CDF, like ``torch.nn.GELU``.

    ``approximate="none"`` (PyTorch's default) is the exact form, ``Φ(x) = erfc(-x/√2) / 2``
    (:mod:`convtrain.ops.special`: erfc rather than ``1 + erf`` keeps the tiny ``Φ`` of very
    negative ``x`` exact); ``"tanh"`` is the approximation
    ``Φ(x) ≈ (1 + tanh(√(2/π) · (x + 0.044715 x³))) / 2`` of Hendrycks & Gimpel, cheaper
    (one ``tanh`` instead of the ~110 elementwise passes of the erfc).
    The cache is the local slope ``dy/dx``: ``Φ(x) + x · φ(x)`` for the exact form.
    """
    require_float(x, "gelu", "x")
    if approximate not in GELU_APPROXIMATIONS:
        raise ConfigError(f"gelu: approximate must be one of "
                          f"{', '.join(map(repr, GELU_APPROXIMATIONS))}, got {approximate!r}")
    xp = array_module(x)
    if approximate == "tanh":
        inner = x * x
        inner *= _GELU_CUBIC
        inner += 1
        inner *= x
        inner *= _SQRT_2_OVER_PI  # √(2/π) · (x + 0.044715 x³)
        t = xp.tanh(inner)
        half_one_plus_t = (t + 1) * 0.5  # the approximate Φ(x)
        # d/dx: Φ + x/2 · (1 - t²) · √(2/π) · (1 + 3 · 0.044715 x²)
        local_slope = x * x
        local_slope *= 3 * _GELU_CUBIC
        local_slope += 1
        local_slope *= (1 - t * t) * (0.5 * _SQRT_2_OVER_PI)
        local_slope *= x
        local_slope += half_one_plus_t
        return x * half_one_plus_t, local_slope
    cdf = erfc(x * -_SQRT_HALF)
    cdf *= 0.5
    density = xp.exp(x * x * -0.5)
    density *= _INV_SQRT_2PI
    local_slope = x * density
    local_slope += cdf
    return x * cdf, local_slope


def gelu_backward(dy: Any, cache: Any) -> Any:
    return dy * cache
