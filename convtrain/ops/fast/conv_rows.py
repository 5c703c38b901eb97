"""Stride-1 convolution on kernel-row columns: im2col with the kernel's column offsets left out.

im2col copies the input ``kh*kw`` times (one column row per channel and kernel offset). For
stride 1 the ``kw`` column offsets of a kernel row are shifts by ``j*dw`` of the SAME flat
image row, so they can be applied to the GEMM's result instead of its operand. With ``Wp`` the
padded width and ``lq = oh*Wp`` columns per sample (``p = y*Wp + x`` a flat output position;
``x >= ow`` are "garbage" positions, never read back):

* **Forward.** ``rows[(c,i), s, u] = xpad[s, c, i*dh*Wp + u]`` (``C*kh`` column rows, each one
  contiguous run of the input); ``Z (F*kw, n*lq) = W_rows @ rows`` with
  ``W_rows[(f,j), (c,i)] = W[f,c,i,j]``; then ``y[s,f,p] = sum_j Z[(f,j), s, p + j*dw]``,
  ``kw - 1`` shifted adds of ``F`` rows. The bias rides in the GEMM: a row of ones under
  ``rows`` and the bias as an extra column of ``W_rows`` (in the ``j = 0`` rows).
* **Weight gradient.** ``shifted[(f,j), s, u] = dY[s, f, u - j*dw]`` (zero where no output
  lands), then ``dW[f,c,i,j] = sum_{s,u} shifted[(f,j),s,u] * rows[(c,i),s,u]``: one GEMM
  ``shifted @ rows.T`` of shape ``(F*kw, C*kh)``.
* **Input gradient** (the "row fold", also used by the im2col path): ``dx[c, p] = sum_i
  R[(c,i), p - i*dh*Wp]`` with ``R (C*kh, n*lq) = W_fold @ shifted`` and
  ``W_fold[(c,i), (f,j)] = W[f,c,i,j]``: ``kh - 1`` shifted adds.

A shift never carries a value into the next image row or sample: it stays within the
``Wp - ow`` garbage positions after each output row, which are zero in ``shifted`` and are
dropped from ``y``.

What this saves against im2col (per sample, in units of ``lq`` floats): the column copy
shrinks from ``C*kh*kw`` to ``C*kh`` rows, and both GEMMs that read the columns (forward and
``dW``) read ``kw`` times less; in exchange the forward GEMM writes ``F*kw`` rows instead of
``F`` and the fold reads them back. :func:`convtrain.ops.fast.plan.plan_conv` decides per
layer (measurements: benchmarks/RESULTS.md).

Groups are not supported here (the im2col path runs grouped convolutions). Written against
``xp``, but only NumPy arrays come here: CuPy takes the reference route.
"""
from __future__ import annotations

from typing import Any

from convtrain.ops.fast.layout import ConvGeometry, flat_view, grouped_gemm, write_output
from convtrain.runtime.threads import run_split


def column_rows(g: ConvGeometry, has_bias: bool) -> int:
    """Rows of the kernel-row column matrix: ``C*kh``, plus the row of ones for a bias."""
    return g.c * g.kh + int(has_bias)


def forward_weight(xp: Any, weight: Any, bias: Any) -> Any:
    """``W_rows`` ``(F*kw, C*kh [+1])``: rows ``(f, j)``, columns ``(c, i)``, and the bias as a
    last column in the ``j = 0`` rows (zero in the others) when ``bias`` is given."""
    filters, channels, kh, kw = (int(s) for s in weight.shape)
    extra = 0 if bias is None else 1
    out = xp.empty((filters, kw, channels * kh + extra), dtype=weight.dtype)
    out[:, :, :channels * kh] = weight.transpose(0, 3, 1, 2).reshape(filters, kw, channels * kh)
    if bias is not None:
        out[:, 0, -1] = bias
        out[:, 1:, -1] = 0
    return out.reshape(filters * kw, channels * kh + extra)


def fold_weight(xp: Any, weight: Any, groups: int) -> Any:
    """``W_fold`` for the input gradient: per group, rows ``(c, i)`` and columns ``(f, j)`` of
    the group, the groups' blocks stacked by rows: ``(C*kh, F/groups*kw)``."""
    filters, per_group, kh, kw = (int(s) for s in weight.shape)
    fg = filters // groups
    blocks = weight.reshape(groups, fg, per_group, kh, kw).transpose(0, 2, 3, 1, 4)
    return xp.ascontiguousarray(blocks).reshape(groups * per_group * kh, fg * kw)


def fill_columns(xp: Any, xpad: Any, columns: Any, col0: int, g: ConvGeometry,
                 has_bias: bool) -> None:
    """Write the kernel-row columns of the padded samples ``xpad (n, C, Hp, Wp)``
    (C-contiguous) into columns ``col0:col0 + n*lq`` of the C-contiguous
    ``columns (C*kh [+1], >= n*lq)``; the last row is set to ones when ``has_bias``."""
    n, lq = xpad.shape[0], g.row_length
    s_n, s_c = g.c * g.hp * g.wp, g.hp * g.wp
    r = columns.shape[1]
    src = flat_view(xp, xpad, (g.c, g.kh, n, lq), (s_c, g.dh * g.wp, s_n, 1))
    dst = flat_view(xp, columns, (g.c, g.kh, n, lq), (g.kh * r, r, lq, 1), col0)
    xp.copyto(dst, src)
    if has_bias:
        columns[-1, col0:col0 + n * lq] = 1


def forward(xp: Any, columns: Any, w_rows: Any, y: Any, n0: int, g: ConvGeometry,
            ws: Any) -> None:
    """Samples ``n0:n0+n`` of ``y`` ``(N, F, oh, ow)`` from their kernel-row columns
    ``(C*kh [+1], n*lq)``: the GEMM into ``F*kw`` rows, the ``kw - 1`` shifted adds, and one
    pass that drops the garbage positions and transposes ``(F, n) -> (n, F)``."""
    lq, dw = g.row_length, g.dw
    total = columns.shape[1]
    n = total // lq
    z = ws.get("z_rows", (g.filters, g.kw, total), y.dtype, xp)
    xp.matmul(w_rows, columns, out=z.reshape(g.filters * g.kw, total))
    # Output positions past `valid` are the last sample's trailing garbage: not computed.
    valid = total - (g.kw - 1) * dw
    acc = ws.get("y_rows", (g.filters, total), y.dtype, xp)
    if g.kw == 1:
        xp.copyto(acc, z[:, 0])
    else:
        # One view object serves as input and out: CuPy copies an input that is a distinct
        # view of the output's memory before every add, NumPy reads it in place.
        head = acc[:, :valid]
        xp.add(z[:, 0, :valid], z[:, 1, dw:dw + valid], out=head)
        for j in range(2, g.kw):
            xp.add(head, z[:, j, j * dw:j * dw + valid], out=head)
    write_output(xp, acc, y, n0, n0 + n, g, None, lq)


def shift_dy(xp: Any, dy_mat: Any, g: ConvGeometry, ws: Any) -> Any:
    """``shifted (F*kw, n*lq)`` from ``dY`` in wide GEMM layout ``dy_mat (F, n*L)`` (garbage
    columns zero): row ``(f, j)`` holds ``dY[f]`` shifted right by ``j*dw`` within each
    sample, zero where nothing lands (those zeros persist in a marked workspace buffer).

    (Copied run by run of ``L`` per sample from the separate ``dy_mat``: 1.6x faster than
    whole-row copies of a ``j = 0`` block inside ``shifted`` itself.)"""
    n = dy_mat.shape[1] // g.length
    lq = g.row_length
    shifted, fresh = ws.get_marked("dy_shifted", (g.filters * g.kw, n * lq),
                                   dy_mat.dtype, xp, ("dy_shifted", g, n))
    if fresh:
        shifted[...] = 0  # the columns no shift reaches stay zero across calls
    r_src, r_dst = dy_mat.strides[0] // dy_mat.itemsize, n * lq
    # row (f, j), sample s, column t + j*dw  <-  dY row f, sample s, column t
    dst = flat_view(xp, shifted, (g.filters, g.kw, n, g.length),
                    (g.kw * r_dst, r_dst + g.dw, lq, 1))
    src = flat_view(xp, dy_mat, (g.filters, g.kw, n, g.length), (r_src, 0, g.length, 1))
    xp.copyto(dst, src)
    return shifted


def weight_grad(xp: Any, shifted: Any, columns: Any, out: Any, g: ConvGeometry) -> None:
    """``out (F*kw, C*kh) = shifted @ columns[:C*kh].T``: the weight gradient in
    ``(f, j), (c, i)`` order (see :func:`split_weight_grad`). The bias row of ones is left
    out: an odd extra output column slows this GEMM more than summing ``dY`` costs."""
    xp.matmul(shifted, columns[:g.c * g.kh].T, out=out)


def split_weight_grad(xp: Any, dw_rows: Any, dweight: Any) -> None:
    """Copy ``dw_rows (F*kw, C*kh)`` into ``dweight (F, C, kh, kw)``."""
    filters, channels, kh, kw = (int(s) for s in dweight.shape)
    xp.copyto(dweight.transpose(0, 3, 1, 2), dw_rows.reshape(filters, kw, channels, kh))


def input_grad(xp: Any, shifted: Any, w_fold: Any, dx: Any, n0: int, g: ConvGeometry,
               ws: Any, groups: int) -> None:
    """``dx[n0:n0+n]`` ``(N, C, H, W)`` from ``shifted (F*kw, n*lq)``: the GEMM
    ``W_fold @ shifted`` into ``C*kh`` rows, then the ``kh`` row offsets folded with shifted
    adds in ``(C, n, Hp*Wp)`` order (each add reads its rows contiguously) and one transposing
    copy. Channels are independent: split between the engine's threads (inline inside a
    batch part)."""
    lq = g.row_length
    n = shifted.shape[1] // lq
    rows = ws.get("dx_rows", (g.c * g.kh, n * lq), shifted.dtype, xp)
    grouped_gemm(xp, w_fold, shifted, rows, groups)
    acc = ws.get("dx_padded", (g.c, n, g.hp * g.wp), shifted.dtype, xp)
    src_rows = flat_view(xp, rows, (g.c, g.kh, n, lq), (g.kh * n * lq, n * lq, lq, 1))

    def fold(a: int, b: int) -> None:
        part = acc[a:b]
        part[:, :, :lq] = src_rows[a:b, 0]
        part[:, :, lq:] = 0
        for i in range(1, g.kh):
            start = i * g.dh * g.wp
            part[:, :, start:start + lq] += src_rows[a:b, i]
        padded = part.reshape(b - a, n, g.hp, g.wp)
        dx[n0:n0 + n, a:b] = padded[:, :, g.ph:g.ph + g.h, g.pw:g.pw + g.w].transpose(1, 0, 2, 3)

    run_split(fold, g.c, 2 * acc.nbytes + rows.nbytes, xp)
