"""The geometry of one convolution call and the strided views between its memory layouts.

Shared by the two ways :mod:`convtrain.ops.fast.conv` computes a convolution: im2col columns
(:mod:`convtrain.ops.fast.conv`) and kernel-row columns (:mod:`convtrain.ops.fast.conv_rows`).
Written against ``xp``, but only NumPy arrays come here: CuPy takes the reference route.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from convtrain.ops.conv import group_blocks
from convtrain.runtime.backend import array_module
from convtrain.runtime.threads import run_split


class ConvGeometry(NamedTuple):
    """Sizes of one convolution call (all ints)."""

    n: int
    c: int
    h: int
    w: int
    filters: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int
    oh: int
    ow: int
    wide: bool  # stride 1: columns are flat shifts of rows of width wp (see module notes)
    length: int  # columns per sample: (oh-1)*wp + ow when wide, else oh*ow

    @property
    def hp(self) -> int:
        return self.h + 2 * self.ph

    @property
    def wp(self) -> int:
        return self.w + 2 * self.pw

    @property
    def rows(self) -> int:
        """Column rows of ALL channels (``C*kh*kw``)."""
        return self.c * self.kh * self.kw

    @property
    def row_length(self) -> int:
        """Columns per sample of kernel-row columns and of shifted ``dY`` rows (wide layout):
        ``L`` plus the largest kernel column shift, which is ``oh*Wp`` for stride 1."""
        return self.length + (self.kw - 1) * self.dw


def flat_view(xp: Any, a: Any, shape: tuple[int, ...], strides_items: tuple[int, ...],
              offset: int = 0) -> Any:
    """A strided view of ``a``'s memory starting ``offset`` items in, with strides given in
    ITEMS (NumPy and CuPy). ``a`` must be C-contiguous when ``offset`` is not 0.

    For a C-contiguous NumPy array the view is built by the ``ndarray`` constructor, ~8x
    cheaper than ``as_strided`` (a convolution makes about ten views a part and direction)."""
    item = a.itemsize
    strides = tuple(s * item for s in strides_items)
    if xp is np and a.flags.c_contiguous:
        return np.ndarray(shape, a.dtype, a, offset * item, strides)
    if offset:
        a = a.reshape(-1)[offset:]
    return xp.lib.stride_tricks.as_strided(a, shape=shape, strides=strides)


def padded_chunk(x: Any, n0: int, n1: int, g: ConvGeometry, ws: Any) -> Any:
    """``x[n0:n1]`` zero-padded to ``(n, C, Hp, Wp)``, C-contiguous (a scratch buffer of the
    workspace ``ws`` or its part scope, or ``x[n0:n1]`` itself when nothing needs padding)."""
    xp = array_module(x)
    part = x[n0:n1]
    if g.ph == 0 and g.pw == 0 and part.flags.c_contiguous:
        return part
    # The zero border survives between calls (only the interior is written): it is zeroed
    # again only when the buffer or its layout changed.
    buf, fresh = ws.get_marked("x_padded", (n1 - n0, g.c, g.hp, g.wp), x.dtype, xp,
                               ("x_padded", n1 - n0, g.c, g.hp, g.wp, g.ph, g.pw))
    ph, pw, h, w = g.ph, g.pw, g.h, g.w

    def fill(a: int, b: int) -> None:
        # Only the border is zeroed (when fresh): the interior is overwritten right after.
        dst = buf[a:b]
        if fresh and ph:
            dst[:, :, :ph] = 0
            dst[:, :, ph + h:] = 0
        if fresh and pw:
            dst[:, :, ph:ph + h, :pw] = 0
            dst[:, :, ph:ph + h, pw + w:] = 0
        dst[:, :, ph:ph + h, pw:pw + w] = part[a:b]

    run_split(fill, n1 - n0, 2 * buf.nbytes, xp)
    return buf


def valid_view(xp: Any, mat: Any, g: ConvGeometry, n: int, length: int | None = None) -> Any:
    """``(F', n, oh, ow)`` view of the real outputs inside a ``(F', n*length)`` GEMM result
    (``length``: columns per sample, default ``g.length``; wide layouts only may differ)."""
    r = mat.strides[0] // mat.itemsize  # n*length, or more for a column slice
    if not g.wide:
        return flat_view(xp, mat, (mat.shape[0], n, g.oh, g.ow), (r, g.oh * g.ow, g.ow, 1))
    per_sample = g.length if length is None else length
    return flat_view(xp, mat, (mat.shape[0], n, g.oh, g.ow), (r, per_sample, g.wp, 1))


def write_output(xp: Any, y_mat: Any, y: Any, n0: int, n1: int, g: ConvGeometry,
                 bias4: Any = None, length: int | None = None) -> None:
    """Samples ``n0:n1`` of ``y`` ``(N, F, oh, ow)`` from their GEMM result ``y_mat``
    ``(F, n*length)`` (``length`` as in :func:`valid_view`): one pass drops wide columns'
    garbage, adds the bias ``(F, 1, 1, 1)`` (or None) and transposes (F, n) -> (n, F), split
    over the engine threads along F (inline inside a batch part). The inverse of
    :func:`gather_dy`."""
    src = valid_view(xp, y_mat, g, n1 - n0, length)
    dst = y[n0:n1].transpose(1, 0, 2, 3)

    def finish(f0: int, f1: int) -> None:
        if bias4 is None:
            xp.copyto(dst[f0:f1], src[f0:f1])
        else:
            xp.add(src[f0:f1], bias4[f0:f1], out=dst[f0:f1])

    run_split(finish, g.filters, 2 * dst.size * y.dtype.itemsize, xp)


def gather_dy(xp: Any, dy: Any, n0: int, n1: int, dy_mat: Any, g: ConvGeometry,
              zero_garbage: bool) -> None:
    """Samples ``n0:n1`` of ``dy`` ``(N, F, oh, ow)`` into GEMM layout ``dy_mat`` ``(F, n*L)``.

    With wide columns the extra (garbage) columns must be zero, so that they add nothing to dW
    and give zero column gradients; ``zero_garbage=False`` when the buffer still holds zeros
    there from an earlier call (only valid columns are ever written)."""
    filters, m = g.filters, n1 - n0
    dst = valid_view(xp, dy_mat, g, m)
    src = dy[n0:n1].transpose(1, 0, 2, 3)
    garbage = None
    if zero_garbage and g.wide and g.oh > 1 and g.wp > g.ow:
        garbage = flat_view(xp, dy_mat, (filters, m, g.oh - 1, g.wp - g.ow),
                            (m * g.length, g.length, g.wp, 1), g.ow)

    def gather(f0: int, f1: int) -> None:
        if garbage is not None:
            garbage[f0:f1] = 0
        xp.copyto(dst[f0:f1], src[f0:f1])

    run_split(gather, filters, 2 * dy_mat.nbytes, xp)


def cols_view(mat: Any, a: int, b: int, length: int) -> Any:
    """Columns ``a*length:b*length`` (samples ``a:b``) of a ``(rows, n*length)`` matrix."""
    return mat[:, a * length:b * length]



def grouped_gemm(xp: Any, a: Any, b: Any, out: Any, groups: int) -> None:
    """``out = a @ b`` per channel group: ``a``, ``b`` and ``out`` are each cut into ``groups``
    equal blocks of rows, and block ``k`` of ``out`` is block ``k`` of ``a`` times block ``k``
    of ``b`` (the block-diagonal product of a grouped convolution)."""
    for b_rows, a_rows in group_blocks(b.shape[0], a.shape[0], groups):
        xp.matmul(a[a_rows], b[b_rows], out=out[a_rows])
