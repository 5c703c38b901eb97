"""Max and average pooling with PyTorch semantics (floor output size, no ceil_mode).

In general both directions loop over the ``kh*kw`` kernel offsets and work on whole strided
slices ``x_padded[:, :, i::sh, j::sw]`` (each of shape ``(N, C, oh, ow)``): a running ``maximum``
over those slices was ~9x faster than an argmax over materialised windows.

Windows that tile the input (kernel == stride) take the max over rows first, on contiguous
image rows (:func:`_tiled_max`); 2x2 float32 pools also route the gradient on whole rows,
ties resolved on 16-bit views of the row masks (:func:`_tiled_2x2_backward`).

Max pooling splits the batch between the engine's threads (:mod:`convtrain.runtime.threads`;
samples are independent), and its backward pass skips zero-filling ``dx`` when the windows tile
the input exactly (every element is then written once).
"""
from __future__ import annotations

import sys
from typing import Any, NamedTuple

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_float, require_ndim, require_shape
from convtrain.ops.im2col import output_hw, pad_hw, pair, window_slice
from convtrain.runtime.threads import run_split
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


def _geometry(op: str, x: Any, kernel_size: Any, stride: Any, padding: Any) -> PoolGeometry:
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
    geometry = _geometry("maxpool2d", x, kernel_size, stride, padding)
    xp = array_module(x)
    x_padded = pad_hw(x, geometry.padding, value=-float("inf"))
    y = xp.empty((x.shape[0], x.shape[1], *geometry.out_hw), dtype=x.dtype)
    if _tiles(geometry, x_padded.shape):
        _tiled_max(x_padded, y, geometry)
        return y, MaxPoolCache(x_padded, y, geometry)

    def pool(a: int, b: int) -> None:
        offsets = geometry.offsets()
        rows, cols = next(offsets)
        part = y[a:b]
        xp.copyto(part, x_padded[a:b, :, rows, cols])
        for rows, cols in offsets:
            xp.maximum(part, x_padded[a:b, :, rows, cols], out=part)

    run_split(pool, int(x.shape[0]), x_padded.nbytes + y.nbytes, xp)
    return y, MaxPoolCache(x_padded, y, geometry)


def _tiles(geometry: PoolGeometry, padded_shape: tuple[int, ...]) -> bool:
    """Windows that tile the padded input exactly (kernel == stride, no remainder)."""
    (kh, kw), (sh, sw), (oh, ow) = geometry.kernel_size, geometry.stride, geometry.out_hw
    return ((kh, kw) == (sh, sw) and padded_shape[2] == oh * kh
            and padded_shape[3] == ow * kw)


def _tiled_max(x_padded: Any, y: Any, geometry: PoolGeometry) -> None:
    """Forward max for tiling windows, rows first: the max over each window's ``kh`` rows
    reads whole image rows (contiguous), leaving ``kw``-strided slices only for the second,
    ``kh`` times smaller step (2x2 on (128, 6, 28, 28): 0.42 -> 0.37 ms). The max is exact,
    so the order of the reduction does not change ``y``."""
    xp = array_module(x_padded)
    (kh, kw), oh = geometry.kernel_size, geometry.out_hw[0]
    wp = x_padded.shape[3]

    def pool(a: int, b: int) -> None:
        xs = x_padded[a:b]
        rows = xp.empty((b - a, xs.shape[1], oh, wp), dtype=xs.dtype)
        xp.copyto(rows, xs[:, :, 0::kh])
        for i in range(1, kh):
            xp.maximum(rows, xs[:, :, i::kh], out=rows)
        part = y[a:b]
        xp.copyto(part, rows[..., 0::kw])
        for j in range(1, kw):
            xp.maximum(part, rows[..., j::kw], out=part)

    run_split(pool, int(x_padded.shape[0]), x_padded.nbytes + y.nbytes, xp)


def _pair_repeat_float32(a: Any, xp: Any) -> Any:
    """``a`` (float32, ``(..., w)``) with every element repeated twice along the last axis:
    ``(..., 2w)``, as ``np.repeat(a, 2, axis=-1)`` but 3x faster. Each float32's 32 bits are
    written into both halves of a 64-bit integer (``v * (2**32 + 1)``), which, viewed as two
    float32s, is the pair ``(v, v)`` on either byte order. Bit-exact (NaN payloads included)."""
    wide = xp.empty(a.shape, dtype=xp.uint64)
    xp.copyto(wide, a.view(xp.uint32))
    xp.multiply(wide, xp.uint64(0x100000001), out=wide)
    return wide.view(xp.float32)


def _tiled_2x2_backward(dy: Any, cache: MaxPoolCache, dx_padded: Any) -> None:
    """Backward of a 2x2, stride-2 float32 pool that tiles its input, on whole image rows.

    For each of the two rows of every window, one contiguous comparison of the image row with
    ``y`` repeated pairwise (:func:`_pair_repeat_float32`) marks the inputs equal to their
    window's max. Ties are then resolved with PyTorch's rule (the first maximum in row-major
    order: ``a, b`` on the top row, then ``c, d``) on 16-bit views of the boolean rows, where
    one integer holds a window's two marks of that row: "``b`` only if not ``a``" is
    ``top & ~(top << 8)`` (the first element's byte shifted onto the second's; shifted the
    other way on a big-endian machine), and the bottom row keeps its marks only where the top
    row has none. The marked inputs receive ``dy`` repeated pairwise. A NaN max matches
    nothing, so its window routes no gradient, as in the general path.

    Measured against the general path (four stride-2 slices, 14 passes): real Fashion-MNIST
    batches are full of ties (flat background), where a tie-free fast path would not apply."""
    x_padded, y = cache.x_padded, cache.y
    xp = array_module(dy)
    # moves the mark of a row's first element onto its second element's byte
    onto_second = xp.left_shift if sys.byteorder == "little" else xp.right_shift

    def route(a: int, b: int) -> None:
        y2, dy2 = _pair_repeat_float32(y[a:b], xp), _pair_repeat_float32(dy[a:b], xp)
        hits = [xp.empty(y2.shape, dtype=bool) for _ in range(2)]
        for r in (0, 1):
            xp.equal(x_padded[a:b, :, r::2], y2, out=hits[r])
        top, bottom = (h.view(xp.uint16) for h in hits)  # one integer per window and row
        scratch = xp.empty(top.shape, dtype=xp.uint16)
        for marks in (top, bottom):  # keep only the first mark of each row
            onto_second(marks, xp.uint16(8), out=scratch)
            xp.invert(scratch, out=scratch)
            xp.bitwise_and(marks, scratch, out=marks)
        xp.equal(top, xp.uint16(0), out=scratch)  # 1 where the top row has no max
        xp.multiply(bottom, scratch, out=bottom)
        for r in (0, 1):
            xp.multiply(hits[r], dy2, out=dx_padded[a:b, :, r::2])

    run_split(route, int(dy.shape[0]), x_padded.nbytes + y.nbytes, xp)


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
    (kh, kw), (sh, sw), (oh, ow) = geometry.kernel_size, geometry.stride, geometry.out_hw
    # Without overlap every padded pixel lies in at most one window, so each offset can write
    # its share straight into dx instead of accumulating through a temporary.
    overlapping = sh < kh or sw < kw
    # Windows that tile the padded input exactly write every element of dx once: no zero-fill.
    tiling = ((kh, kw) == (sh, sw) and x_padded.shape[2] == oh * sh
              and x_padded.shape[3] == ow * sw)
    dx_padded = (xp.empty if tiling else xp.zeros)(x_padded.shape, dtype=dy.dtype)
    if tiling and (kh, kw) == (2, 2) and dy.dtype == y.dtype == xp.float32:
        _tiled_2x2_backward(dy, cache, dx_padded)
        return _unpad(dx_padded, geometry)

    def route(a: int, b: int) -> None:
        xs, ys, dys, dxs = x_padded[a:b], y[a:b], dy[a:b], dx_padded[a:b]
        # Windows whose gradient has not been routed yet; a later offset equal to the max (a
        # tie) must not receive it a second time.
        unassigned = xp.empty(ys.shape, dtype=bool)
        hit = xp.empty(ys.shape, dtype=bool)
        share = xp.empty(dys.shape, dtype=dys.dtype) if overlapping else None
        offsets = list(geometry.offsets())
        # Multiplying by the boolean mask is ~10x faster than xp.where on random masks.
        for t, (rows, cols) in enumerate(offsets):
            xp.equal(xs[:, :, rows, cols], ys, out=hit)
            if t:  # every window is unassigned before the first offset
                hit &= unassigned
            if overlapping:
                xp.multiply(dys, hit, out=share)
                dxs[:, :, rows, cols] += share
            else:
                xp.multiply(dys, hit, out=dxs[:, :, rows, cols])
            if t == 0:
                xp.logical_not(hit, out=unassigned)
            elif t + 1 < len(offsets):
                unassigned ^= hit  # hit is a subset of unassigned: xor clears exactly those

    run_split(route, int(dy.shape[0]), x_padded.nbytes + y.nbytes, xp)
    return _unpad(dx_padded, geometry)


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
    geometry = _geometry("avgpool2d", x, kernel_size, stride, padding)
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
    return _unpad(dx_padded, geometry)


def _unpad(padded: Any, geometry: PoolGeometry) -> Any:
    """Cut the padding off ``(N, C, H+2ph, W+2pw)`` and return a contiguous ``(N, C, H, W)``."""
    ph, pw = geometry.padding
    if ph == 0 and pw == 0:
        return padded
    h, w = geometry.x_shape[2:]
    return array_module(padded).ascontiguousarray(padded[:, :, ph:ph + h, pw:pw + w])
