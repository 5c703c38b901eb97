"""Inverted dropout: zero each unit with probability ``p`` and scale the kept ones by
``1 / (1 - p)`` so the expected activation is unchanged and inference needs no rescaling.

:func:`dropout_forward` drops single elements; :func:`dropout2d_forward` drops whole feature
maps (channel dropout, ``torch.nn.Dropout2d``): neighbouring pixels of a map are strongly
correlated, so dropping them one by one hardly regularises a convolution.
"""
from __future__ import annotations

from numbers import Real
from typing import Any

from convtrain.ops._checks import require_float, require_ndim
from convtrain.errors import ConfigError


def _check_p(p: Any, op: str = "dropout") -> float:
    if isinstance(p, bool) or not isinstance(p, Real) or not 0 <= p < 1:
        raise ConfigError(f"{op}: p must be a number in [0, 1), got {p!r}")
    return float(p)


def _draw_mask(shape: tuple[int, ...], p: float, rng: Any, dtype: Any) -> Any:
    """Boolean ``shape`` array, True (kept) with probability ``1 - p``."""
    # Draw uniforms in x's dtype where the Generator supports it, to avoid a float64 temporary.
    draw_dtype = dtype if dtype.itemsize in (4, 8) else "float64"
    return rng.random(shape, dtype=draw_dtype) >= p


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
    mask = _draw_mask(x.shape, p, rng, x.dtype)
    return x * mask * x.dtype.type(1 / (1 - p)), mask


def dropout2d_forward(x: Any, p: float, rng: Any) -> tuple[Any, Any]:
    """Channel dropout: each feature map ``x[n, c]`` is zeroed as a whole with probability
    ``p``, the kept ones are scaled by ``1 / (1 - p)``.

    Args:
        x: ``(N, C, H, W)``, float.
        p, rng: as for :func:`dropout_forward`.

    Returns:
        ``(y, mask)``: ``mask`` is boolean ``(N, C, 1, 1)`` (True = kept), broadcast over each
        map; None for ``p == 0``, where ``y`` is ``x`` itself. :func:`dropout_backward` takes
        it as it is.
    """
    p = _check_p(p, "dropout2d")
    require_ndim(x, 4, "dropout2d", "x", "(N, C, H, W)")
    require_float(x, "dropout2d", "x")
    if p == 0:
        return x, None
    mask = _draw_mask((int(x.shape[0]), int(x.shape[1]), 1, 1), p, rng, x.dtype)
    return x * mask * x.dtype.type(1 / (1 - p)), mask


def dropout_backward(dy: Any, mask: Any, p: float) -> Any:
    """``dy`` masked and scaled like the forward pass (identity when ``mask`` is None); the
    mask of :func:`dropout2d_forward` broadcasts over each feature map."""
    p = _check_p(p)
    if mask is None:
        return dy
    return dy * mask * dy.dtype.type(1 / (1 - p))
