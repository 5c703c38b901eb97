"""Inverted dropout: zero each unit with probability ``p`` and scale the kept ones by
``1 / (1 - p)`` so the expected activation is unchanged and inference needs no rescaling.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

from convtrain.ops._checks import require_float
from convtrain.errors import ConfigError


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
        raise ConfigError(f"dropout: p must be a number in [0, 1), got {p!r}")
    return float(p)


def dropout_forward(x: Any, p: float, rng: Any) -> tuple[Any, Any]:
    """Args:
        x: any shape, float.
        p: drop probability in ``[0, 1)``.
        rng: a ``Generator`` of the same backend as ``x`` (``numpy.random.default_rng`` or
            ``cupy.random.default_rng``).

    Returns:
        ``(y, mask)``: ``mask`` is a boolean array shaped like ``x`` (True = kept); for
        ``p == 0`` it is None and ``y`` is ``x`` itself.
    """
    p = _check_p(p)
    require_float(x, "dropout", "x")
    if p == 0:
        return x, None
    # Draw uniforms in x's dtype where the Generator supports it, to avoid a float64 temporary.
    draw_dtype = x.dtype if x.dtype.itemsize in (4, 8) else "float64"
    mask = rng.random(x.shape, dtype=draw_dtype) >= p
    return x * mask * x.dtype.type(1 / (1 - p)), mask


def dropout_backward(dy: Any, mask: Any, p: float) -> Any:
    """``dy`` masked and scaled like the forward pass (identity when ``mask`` is None)."""
    p = _check_p(p)
    if mask is None:
        return dy
    return dy * mask * dy.dtype.type(1 / (1 - p))
