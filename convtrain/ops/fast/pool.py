"""The CPU speed paths of max pooling, equal to :mod:`convtrain.ops.pool` (the max is exact,
so bitwise): samples split between the engine's threads, windows that tile the input reduced
rows first on contiguous image rows, and the float32 2x2 backward on whole rows with the
tie rule applied by bit tricks. Non-NumPy arrays (CuPy) take the reference."""
from __future__ import annotations

import sys
from typing import Any

import numpy as np  # only to tell NumPy arrays from CuPy ones (`xp is np`)

from convtrain.ops import pool as reference
from convtrain.ops.im2col import pad_hw
from convtrain.ops.pool import MaxPoolCache, PoolGeometry, check_pool_arguments, unpad
from convtrain.ops._checks import require_shape
from convtrain.runtime.backend import array_module
from convtrain.runtime.threads import run_split


def maxpool2d_forward(x: Any, kernel_size: Any, stride: Any,
                      padding: Any = (0, 0)) -> tuple[Any, MaxPoolCache]:
    """:func:`convtrain.ops.pool.maxpool2d_forward` on the engine's threads."""
    xp = array_module(x)
    if xp is not np:
        return reference.maxpool2d_forward(x, kernel_size, stride, padding)
    geometry = check_pool_arguments("maxpool2d", x, kernel_size, stride, padding)
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


def maxpool2d_backward(dy: Any, cache: MaxPoolCache) -> Any:
    """:func:`convtrain.ops.pool.maxpool2d_backward` on the engine's threads; windows that do
    not overlap write their share straight into ``dx`` (no zero-fill when they tile it)."""
    xp = array_module(dy)
    if xp is not np:
        return reference.maxpool2d_backward(dy, cache)
    geometry = cache.geometry
    require_shape(dy, cache.y.shape, "maxpool2d backward", "dy")
    x_padded, y = cache.x_padded, cache.y
    (kh, kw), (sh, sw) = geometry.kernel_size, geometry.stride
    # Without overlap every padded pixel lies in at most one window, so each offset can write
    # its share straight into dx instead of accumulating through a temporary.
    overlapping = sh < kh or sw < kw
    # Windows that tile the padded input exactly write every element of dx once: no zero-fill.
    tiling = _tiles(geometry, x_padded.shape)
    dx_padded = (xp.empty if tiling else xp.zeros)(x_padded.shape, dtype=dy.dtype)
    if tiling and (kh, kw) == (2, 2) and dy.dtype == y.dtype == xp.float32:
        _tiled_2x2_backward(dy, cache, dx_padded)
        return unpad(dx_padded, geometry)

    def route(a: int, b: int) -> None:
        xs, ys, dys, dxs = x_padded[a:b], y[a:b], dy[a:b], dx_padded[a:b]
        # Windows whose gradient has not been routed yet; a later offset equal to the max (a
        # tie) must not receive it a second time.
        unassigned = xp.empty(ys.shape, dtype=bool)
        hit = xp.empty(ys.shape, dtype=bool)
        share = xp.empty(dys.shape, dtype=dys.dtype) if overlapping else None
        offsets = list(geometry.offsets())
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
    return unpad(dx_padded, geometry)


def _tiles(geometry: PoolGeometry, padded_shape: tuple[int, ...]) -> bool:
    """Windows that tile the padded input exactly (kernel == stride, no remainder)."""
    (kh, kw), (sh, sw), (oh, ow) = geometry.kernel_size, geometry.stride, geometry.out_hw
    return ((kh, kw) == (sh, sw) and padded_shape[2] == oh * kh
            and padded_shape[3] == ow * kw)


def _tiled_max(x_padded: Any, y: Any, geometry: PoolGeometry) -> None:
    """Forward max for tiling windows, rows first: the max over each window's ``kh`` rows
    reads whole image rows (contiguous), leaving ``kw``-strided slices only for the second,
    ``kh`` times smaller step. The max is exact,
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

    Real Fashion-MNIST batches are full of ties (flat background), so a path that assumed no
    ties would not apply to them."""
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
