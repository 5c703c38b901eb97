"""Global average pooling: the mean of every feature map, ``(N, C, H, W) -> (N, C)``.

Forward, per sample ``n`` and channel ``c``::

    y[n, c] = (1 / (H·W)) · Σ_{i, j} x[n, c, i, j]

Backward: every input position contributed ``1/(H·W)`` of its value to ``y[n, c]``, so

    dx[n, c, i, j] = dy[n, c] / (H·W)

This is ``torch.nn.AdaptiveAvgPool2d(1)`` followed by ``torch.nn.Flatten()``.
"""
from __future__ import annotations

from typing import Any

from convtrain.ops._checks import require_float, require_ndim, require_shape
from convtrain.runtime.backend import array_module


def global_avgpool2d_forward(x: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """``x`` ``(N, C, H, W)`` -> ``y`` ``(N, C)`` (same dtype), cache: the input shape."""
    require_ndim(x, 4, "global_avgpool2d", "x", "(N, C, H, W)")
    require_float(x, "global_avgpool2d", "x")
    xp = array_module(x)
    y = xp.mean(x, axis=(2, 3), dtype=x.dtype)
    return y, tuple(int(s) for s in x.shape)


def global_avgpool2d_backward(dy: Any, cache: tuple[int, int, int, int]) -> Any:
    """``dy`` ``(N, C)`` -> ``dx`` ``(N, C, H, W)``: ``dy / (H·W)`` spread over each map."""
    n, c, h, w = cache
    require_ndim(dy, 2, "global_avgpool2d backward", "dy", "(N, C)")
    require_shape(dy, (n, c), "global_avgpool2d backward", "dy")  # no silent broadcasting
    xp = array_module(dy)
    dx = xp.empty((n, c, h, w), dtype=dy.dtype)
    dx[...] = (dy / (h * w))[:, :, None, None]
    return dx
