"""Max and average pooling with PyTorch semantics (floor output size, no ceil_mode).

Shapes: ``x (N, C, H, W)`` -> ``y (N, C, oh, ow)``, ``oh = floor((H + 2*ph - kh) / sh) + 1``.
Both directions loop over the ``kh*kw`` kernel offsets ``(i, j)`` and work on whole strided
slices ``xp[:, :, i::sh, j::sw]`` (each ``(N, C, oh, ow)``: the element at offset ``(i, j)`` of
every window at once)::

    max:  y = max over (i, j) of xp[:, :, i + sh*u, j + sw*v]     (padding is -inf)
    avg:  y = sum over (i, j) of xp[:, :, i + sh*u, j + sw*v] / count

The max's gradient goes to ONE input per window, the first maximum in row-major window order
(PyTorch's rule); the average's is spread evenly. The threaded CPU paths of max pooling are in
:mod:`convtrain.ops.fast.pool`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_float, require_ndim, require_shape
from convtrain.ops.im2col import output_hw, pad_hw, pair, window_slice
from convtrain.errors import ConfigError


class PoolGeometry(NamedTuple):
    """Window parameters of one pooling call, all ``(h, w)`` pairs of ints."""

    x_shape: tuple[int, int, int, int]
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out_hw: tuple[int, int]

    def offsets(self):
        """Yield ``(row_slice, col_slice)`` into the padded input for each kernel offset, in
        row-major window order (the order that defines "first" maximum)."""
        (kh, kw), (sh, sw), (oh, ow) = self.kernel_size, self.stride, self.out_hw
        for i in range(kh):
            rows = window_slice(i, sh, oh)
            for j in range(kw):
                yield rows, window_slice(j, sw, ow)


def pool_padding_problem(kernel: tuple[int, int], padding: tuple[int, int]) -> str | None:
    """Why ``padding`` is too wide for a pooling ``kernel`` (None when it is fine). PyTorch's
    rule: at most half the kernel along each axis, or a window could hold padding only."""
    for axis, k, p in (("height", kernel[0], padding[0]), ("width", kernel[1], padding[1])):
        if 2 * p > k:
            return f"padding {p} along the {axis} must be at most half the kernel size {k}"
    return None


def check_pool_arguments(op: str, x: Any, kernel_size: Any, stride: Any,
                         padding: Any) -> PoolGeometry:
    """Check ``x (N, C, H, W)`` and the window parameters; their geometry."""
    require_ndim(x, 4, op, "x", "(N, C, H, W)")
    require_float(x, op, "x")
    kernel = pair(kernel_size, "kernel_size")
    step = pair(stride, "stride")
    pad = pair(padding, "padding")
    problem = pool_padding_problem(kernel, pad)
    if problem:
        raise ConfigError(f"{op}: {problem}")
    out_hw = output_hw(x.shape, kernel, step, pad)
    return PoolGeometry(tuple(int(s) for s in x.shape), kernel, step, pad, out_hw)


class MaxPoolCache(NamedTuple):
    x_padded: Any  # (N, C, H+2ph, W+2pw), padded with -inf
    y: Any  # (N, C, oh, ow)
    geometry: PoolGeometry


def maxpool2d_forward(x: Any, kernel_size: Any, stride: Any,
                      padding: Any = (0, 0)) -> tuple[Any, MaxPoolCache]:
    """Max over each window; padding counts as ``-inf`` (never selected).

    Args:
        x: ``(N, C, H, W)`` float.
        kernel_size, stride, padding: ints or ``(h, w)`` pairs.

    Returns:
        ``(y, cache)``, ``y`` of shape ``(N, C, oh, ow)``.
    """
    geometry = check_pool_arguments("maxpool2d", x, kernel_size, stride, padding)
    xp = array_module(x)
    x_padded = pad_hw(x, geometry.padding, value=-float("inf"))
    offsets = geometry.offsets()
    rows, cols = next(offsets)
    y = x_padded[:, :, rows, cols].copy()
    for rows, cols in offsets:  # a running maximum over the window offsets
        xp.maximum(y, x_padded[:, :, rows, cols], out=y)
    return y, MaxPoolCache(x_padded, y, geometry)


def maxpool2d_backward(dy: Any, cache: MaxPoolCache) -> Any:
    """Route each window's gradient to ONE input: the first maximum in row-major window order
    (PyTorch's choice). Overlapping windows accumulate.

    Args:
        dy: ``(N, C, oh, ow)``.

    Returns:
        dx: ``(N, C, H, W)``.
    """
    geometry = cache.geometry
    require_shape(dy, cache.y.shape, "maxpool2d backward", "dy")
    xp = array_module(dy)
    x_padded, y = cache.x_padded, cache.y
    dx_padded = xp.zeros(x_padded.shape, dtype=dy.dtype)
    # Windows whose gradient is not routed yet: an input equal to the max at a later offset
    # (a tie) must not receive it a second time.
    unassigned = xp.ones(y.shape, dtype=bool)
    for rows, cols in geometry.offsets():
        hit = (x_padded[:, :, rows, cols] == y) & unassigned
        dx_padded[:, :, rows, cols] += dy * hit
        unassigned &= ~hit
    return unpad(dx_padded, geometry)


class AvgPoolCache(NamedTuple):
    divisor: Any  # scalar count, or (oh, ow) counts of real (non-padding) inputs per window
    geometry: PoolGeometry


def avgpool2d_forward(x: Any, kernel_size: Any, stride: Any, padding: Any = (0, 0),
                      count_include_pad: bool = True) -> tuple[Any, AvgPoolCache]:
    """Mean over each window, padding counting as zeros (PyTorch semantics).

    With ``count_include_pad=True`` every window divides by ``kh*kw``; with False it divides by
    the number of real input pixels it covers.

    Returns:
        ``(y, cache)``, ``y`` of shape ``(N, C, oh, ow)``.
    """
    geometry = check_pool_arguments("avgpool2d", x, kernel_size, stride, padding)
    xp = array_module(x)
    x_padded = pad_hw(x, geometry.padding)
    (kh, kw), (oh, ow) = geometry.kernel_size, geometry.out_hw
    y = xp.zeros((x.shape[0], x.shape[1], oh, ow), dtype=x.dtype)
    for rows, cols in geometry.offsets():
        y += x_padded[:, :, rows, cols]
    if count_include_pad or geometry.padding == (0, 0):
        divisor = kh * kw
    else:
        # Sliding the same windows over an all-ones image counts the real pixels in each.
        ones = pad_hw(xp.ones((1, 1) + geometry.x_shape[2:], dtype=x.dtype), geometry.padding)
        divisor = xp.zeros((oh, ow), dtype=x.dtype)
        for rows, cols in geometry.offsets():
            divisor += ones[0, 0, rows, cols]
    y /= divisor
    return y, AvgPoolCache(divisor, geometry)


def avgpool2d_backward(dy: Any, cache: AvgPoolCache) -> Any:
    """Spread each window's gradient evenly (``/ divisor``) over the inputs it averaged.

    Args:
        dy: ``(N, C, oh, ow)``.

    Returns:
        dx: ``(N, C, H, W)``.
    """
    geometry = cache.geometry
    n, c = geometry.x_shape[:2]
    require_shape(dy, (n, c, *geometry.out_hw), "avgpool2d backward", "dy")
    xp = array_module(dy)
    share = dy / cache.divisor
    h, w = geometry.x_shape[2:]
    (ph, pw) = geometry.padding
    dx_padded = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dy.dtype)
    for rows, cols in geometry.offsets():
        dx_padded[:, :, rows, cols] += share
    return unpad(dx_padded, geometry)


def unpad(padded: Any, geometry: PoolGeometry) -> Any:
    """Cut the padding off ``(N, C, H+2ph, W+2pw)`` and return a contiguous ``(N, C, H, W)``."""
    ph, pw = geometry.padding
    if ph == 0 and pw == 0:
        return padded
    h, w = geometry.x_shape[2:]
    return array_module(padded).ascontiguousarray(padded[:, :, ph:ph + h, pw:pw + w])
