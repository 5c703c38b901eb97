"""The CPU speed paths of the convolution, equal to :mod:`convtrain.ops.conv` up to float
rounding: the same im2col + GEMM + col2im, arranged for a CPU's caches and threads.

:func:`conv2d_forward` / :func:`conv2d_backward` are the entry point the layer calls: they plan
the call (:func:`convtrain.ops.fast.plan.plan_conv`, every route decision) and run either the
reference or one of these routes:

* **im2col** (:func:`_im2col_forward`): columns ``(C*kh*kw, n*L)`` per chunk of samples under
  the workspace limit, kept for the backward pass when the batch is one chunk. Stride-1 layers
  may take *wide* columns (``L = (oh-1)*Wp + ow`` flat positions, so every im2col row is one
  contiguous run and every col2im step a shifted add of long runs; the extra "garbage"
  positions are dropped from ``y`` and zero in ``dY``). Narrow ungrouped layers may run one
  GEMM per sample, whose ``(F, oh*ow)`` result is the sample's output as it lies in ``y``.
* **rows** (:func:`_rows_forward`): stride 1, kernel-row columns, see
  :mod:`convtrain.ops.fast.conv_rows`.
* The input gradient of wide layers may take the **row fold** (``kw`` shifted copies of ``dY``
  in the GEMM's inner dimension, ``kh`` shifted adds) instead of column gradients + col2im.

Whole batches run as *batch parts*, one per engine thread, each start to end (pad, columns,
its own one-thread GEMMs, output layout, col2im), the parts' ``dW``/``db`` shares summed at
the end; scratch arrays come from the layer's :class:`~convtrain.runtime.workspace.Workspace`,
a part's from its own scope ``ws.part(k)``. Geometry and strided views: :mod:`.layout`.
Why each path exists, with its measurements: benchmarks/RESULTS.md.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from convtrain.errors import InternalError
from convtrain.ops import conv as reference
from convtrain.ops._checks import require_ndim, require_same_dtype, require_shape
from convtrain.ops.im2col import im2col
from convtrain.ops.fast import conv_rows
from convtrain.ops.fast.layout import (ConvGeometry, cols_view, flat_view, gather_dy,
                                       grouped_gemm, padded_chunk, write_output)
from convtrain.ops.fast.plan import ConvPlan, Routes, plan_conv
from convtrain.runtime.backend import array_module
from convtrain.runtime.threads import run_alone, run_parts, run_split
from convtrain.runtime.workspace import Workspace, check_workspace_mb, scratch_or

_OP = "conv2d"


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs from a fast forward pass."""

    x: Any  # the input (N, C, H, W) when columns are recomputed per chunk, else None
    cols: Any  # the columns of the whole batch when kept (im2col or kernel-row), else None
    weight: Any  # (F, C//groups, kh, kw)
    has_bias: bool
    plan: ConvPlan
    workspace: Workspace  # scratch buffers (the layer's, or throw-away ones)
    generation: int  # the workspace generation this cache's buffers belong to

    @property
    def geometry(self) -> ConvGeometry:
        return self.plan.geometry

    @property
    def method(self) -> str:
        """The route taken: "im2col" or "rows"."""
        return self.plan.route

    @property
    def chunk(self) -> int:
        return self.plan.chunk


class ReferenceChunks(NamedTuple):
    """Cache of a reference-route convolution over the workspace limit (CuPy's large layers):
    the input, whose columns the backward pass recomputes chunk by chunk."""

    x: Any  # (N, C, H, W)
    weight: Any  # (F, C//groups, kh, kw)
    has_bias: bool
    args: reference.ConvArguments
    chunk: int  # samples per chunk


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1, *, workspace: Workspace | None = None,
                   max_workspace_mb: float | None = None,
                   routes: Routes | None = None) -> tuple[Any, Any]:
    """:func:`convtrain.ops.conv.conv2d_forward`, planned and run on the fastest route.

    Args:
        x, weight, bias, stride, padding, dilation, groups: as the reference.
        workspace: scratch buffers to reuse across calls (a layer's); None allocates fresh
            ones. The returned cache refers to them, so it is valid until the next forward pass
            through the same workspace.
        max_workspace_mb: cap on the scratch memory for this call (MiB); None uses the
            process-wide :func:`~convtrain.runtime.set_max_workspace_mb` setting. Over it, the
            batch is processed in chunks of samples (results equal up to float rounding of the
            weight-gradient sum).
        routes: forced routes for this call (default: :func:`~.plan.force_routes`' or the
            rules').

    Returns:
        ``(y, cache)``, ``y`` ``(N, F, oh, ow)`` in ``x``'s dtype.
    """
    args = reference.check_conv_arguments(x, weight, bias, stride, padding, dilation, groups)
    max_workspace_mb = check_workspace_mb(max_workspace_mb)
    xp = array_module(x)
    plan = plan_conv(tuple(x.shape), tuple(weight.shape), args.stride, args.padding,
                     args.dilation, args.out_hw, args.groups, xp, x.dtype.itemsize,
                     max_workspace_mb, routes)
    if plan.route == "reference":
        if not plan.keeps_columns:
            return _reference_chunks_forward(x, weight, bias, args, plan.chunk)
        return reference.conv2d_forward(x, weight, bias, args.stride, args.padding,
                                        args.dilation, args.groups)
    ws = scratch_or(workspace)
    if plan.route == "rows":
        y, cols = _rows_forward(x, weight, bias, plan, ws)
    else:
        y, cols = _im2col_forward(x, weight, bias, plan, ws)
    keep = plan.keeps_columns
    cache = ConvCache(None if keep else x, cols if keep else None, weight, bias is not None,
                      plan, ws, ws.next_generation())
    return y, cache


def conv2d_backward(dy: Any, cache: Any, input_grad: bool = True) -> tuple[Any, Any, Any]:
    """:func:`convtrain.ops.conv.conv2d_backward` for a cache of :func:`conv2d_forward` (which
    may have taken the reference route): ``(dx, dweight, dbias)``."""
    if isinstance(cache, reference.ConvCache):
        return reference.conv2d_backward(dy, cache, input_grad)
    if isinstance(cache, ReferenceChunks):
        return _reference_chunks_backward(dy, cache, input_grad)
    g, weight, ws = cache.geometry, cache.weight, cache.workspace
    if not ws.is_current(cache.generation):
        # The kept columns live in a reused buffer that a later forward pass overwrote.
        raise InternalError(f"{_OP} backward: stale cache: another forward pass through the "
                            "same workspace ran after the one this cache came from; call "
                            "backward before the next forward (or give each call its own "
                            "workspace)")
    require_ndim(dy, 4, f"{_OP} backward", "dy", "(N, F, oh, ow)")
    require_shape(dy, (g.n, g.filters, g.oh, g.ow), f"{_OP} backward", "dy")
    require_same_dtype(f"{_OP} backward", "the forward input", weight, dy=dy)
    xp = array_module(dy)
    # every chunk writes dW in full; an empty batch has no chunk, and its gradient is zero
    dweight = (xp.zeros if g.n == 0 else xp.empty)(weight.shape, dtype=dy.dtype)
    dbias = xp.zeros(g.filters, dtype=dy.dtype) if cache.has_bias else None
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dy.dtype) if input_grad else None
    if cache.plan.route == "rows":
        _rows_backward(dy, cache, dweight, dbias, dx)
    elif cache.cols is not None and g.n > 0:
        _im2col_backward_parts(dy, cache, dweight, dbias, dx)
    else:
        _im2col_backward_chunks(dy, cache, dweight, dbias, dx)
    return dx, dweight, dbias


def _reference_chunks_forward(x: Any, weight: Any, bias: Any, args: reference.ConvArguments,
                              chunk: int) -> tuple[Any, ReferenceChunks]:
    """The reference convolution, ``chunk`` samples at a time, keeping no columns (so the
    workspace limit holds on CuPy too)."""
    xp = array_module(x)
    n, filters = int(x.shape[0]), int(weight.shape[0])
    y = xp.empty((n, filters, *args.out_hw), dtype=x.dtype)
    for a in range(0, n, chunk):
        y[a:a + chunk] = reference.conv2d_forward(x[a:a + chunk], weight, bias, args.stride,
                                                  args.padding, args.dilation, args.groups)[0]
    return y, ReferenceChunks(x, weight, bias is not None, args, chunk)


def _reference_chunks_backward(dy: Any, cache: ReferenceChunks,
                               input_grad: bool) -> tuple[Any, Any, Any]:
    """The reference backward pass chunk by chunk, each chunk's columns recomputed; the
    chunks' weight and bias gradients summed."""
    x, weight, args = cache.x, cache.weight, cache.args
    require_shape(dy, (int(x.shape[0]), int(weight.shape[0]), *args.out_hw),
                  f"{_OP} backward", "dy")
    xp = array_module(dy)
    dweight = xp.zeros(weight.shape, dtype=dy.dtype)
    dbias = xp.zeros(weight.shape[0], dtype=dy.dtype) if cache.has_bias else None
    dx = xp.empty(x.shape, dtype=dy.dtype) if input_grad else None
    for a in range(0, int(x.shape[0]), cache.chunk):
        part = x[a:a + cache.chunk]
        cols = im2col(part, weight.shape[2:], args.stride, args.padding, args.dilation)
        dx_part, dw_part, db_part = reference.conv2d_backward(
            dy[a:a + cache.chunk],
            reference.ConvCache(tuple(int(s) for s in part.shape), cols, weight,
                                cache.has_bias, args), input_grad)
        dweight += dw_part
        if dbias is not None:
            dbias += db_part
        if dx is not None:
            dx[a:a + cache.chunk] = dx_part
    return dx, dweight, dbias


def _run(plan: ConvPlan, fn: Any, n0: int, n1: int) -> int:
    """``fn(k, a, b)`` over samples ``n0:n1`` cut into the plan's batch parts, on the engine's
    threads or on the calling thread alone. Returns the number of parts."""
    ranges = plan.ranges(n0, n1)
    (run_alone if plan.alone else run_parts)(fn, ranges)
    return len(ranges)


# --- im2col columns ---------------------------------------------------------------------

def _im2col_chunk(xpad: Any, cols: Any, g: ConvGeometry, col0: int = 0) -> None:
    """Write the columns of the padded chunk ``xpad (n, C, Hp, Wp)`` (C-contiguous) into
    columns ``col0:col0 + n*L`` of the C-contiguous ``cols (rows, >= n*L)``."""
    xp = array_module(xpad)
    n = xpad.shape[0]
    s_n, s_c, s_h, s_w = g.c * g.hp * g.wp, g.hp * g.wp, g.wp, 1
    r = cols.shape[1]
    kk = g.kh * g.kw
    if g.wide:
        # s_h == wp * s_w (xpad is C-contiguous), so a row shift is a flat shift.
        src = flat_view(xp, xpad, (g.c, g.kh, g.kw, n, g.length),
                        (s_c, g.dh * s_h, g.dw * s_w, s_n, s_w))
        dst = flat_view(xp, cols, (g.c, g.kh, g.kw, n, g.length),
                        (kk * r, g.kw * r, r, g.length, 1), col0)
    else:
        src = flat_view(xp, xpad, (g.c, g.kh, g.kw, n, g.oh, g.ow),
                        (s_c, g.dh * s_h, g.dw * s_w, s_n, g.sh * s_h, g.sw * s_w))
        dst = flat_view(xp, cols, (g.c, g.kh, g.kw, n, g.oh, g.ow),
                        (kk * r, g.kw * r, r, g.oh * g.ow, g.ow, 1), col0)

    def copy(a: int, b: int) -> None:
        xp.copyto(dst[:, :, :, a:b], src[:, :, :, a:b])

    run_split(copy, n, cols.shape[0] * n * g.length * cols.itemsize, xp)


def _im2col_forward(x: Any, weight: Any, bias: Any, plan: ConvPlan,
                    ws: Workspace) -> tuple[Any, Any]:
    """``y`` and the columns of the last chunk (the whole batch's when kept)."""
    g, groups = plan.geometry, plan.groups
    xp = array_module(x)
    w_mat = weight.reshape(g.filters, -1)
    y = xp.empty((g.n, g.filters, g.oh, g.ow), dtype=x.dtype)
    bias4 = None if bias is None else bias.reshape(g.filters, 1, 1, 1)
    if plan.keeps_columns:
        if g.n == 0:
            return y, None
        return y, _im2col_forward_parts(x, w_mat, bias4, y, plan, ws)
    # Chunked (over the workspace limit): the backward pass recomputes each chunk's columns.
    cols = None
    for n0 in range(0, g.n, plan.chunk):
        n1 = min(g.n, n0 + plan.chunk)
        m = n1 - n0
        cols = ws.get("cols", (g.rows, m * g.length), x.dtype, xp)
        _im2col_chunk(padded_chunk(x, n0, n1, g, ws), cols, g)
        y_mat = ws.get("y_mat", (g.filters, m * g.length), x.dtype, xp)
        grouped_gemm(xp, w_mat, cols, y_mat, groups)
        write_output(xp, y_mat, y, n0, n1, g, bias4)
    return y, cols


def _im2col_forward_parts(x: Any, w_mat: Any, bias4: Any, y: Any, plan: ConvPlan,
                          ws: Workspace) -> Any:
    """Whole-batch forward as batch parts, each start to end on its own thread (pad, im2col
    into the kept columns, GEMM, bias + transpose into ``y``). Returns the ``(rows, N*L)``
    columns."""
    g, groups = plan.geometry, plan.groups
    xp = array_module(x)
    L = g.length
    cols = ws.get("cols", (g.rows, g.n * L), x.dtype, xp)

    def part(k: int, a: int, b: int) -> None:
        scope = ws.part(k)
        _im2col_chunk(padded_chunk(x, a, b, g, scope), cols, g, a * L)
        if plan.per_sample:
            # One GEMM per sample writes (F, oh*ow) straight into y: no layout copy.
            y3 = y[a:b].reshape(b - a, g.filters, L)
            xp.matmul(w_mat, _per_sample_view(xp, cols, b - a, L, a * L), out=y3)
            if bias4 is not None:
                xp.add(y3, bias4.reshape(g.filters, 1), out=y3)
            return
        y_part = scope.get("y_mat", (g.filters, (b - a) * L), x.dtype, xp)
        grouped_gemm(xp, w_mat, cols_view(cols, a, b, L), y_part, groups)
        write_output(xp, y_part, y, a, b, g, bias4)

    _run(plan, part, 0, g.n)
    return cols


def _im2col_backward_parts(dy: Any, cache: ConvCache, dweight: Any, dbias: Any,
                           dx: Any) -> None:
    """Whole-batch backward with kept columns, cut into the forward pass's batch parts: each
    part gathers its ``dY`` columns, computes its share of ``dW`` / ``db`` and its samples of
    ``dx``; the shares are summed at the end."""
    plan, ws, cols = cache.plan, cache.workspace, cache.cols
    g, groups = plan.geometry, plan.groups
    xp = array_module(dy)
    dtype, L = dy.dtype, g.length
    w_mat = cache.weight.reshape(g.filters, -1)
    dw_mat = dweight.reshape(w_mat.shape)
    w_fold = (conv_rows.fold_weight(xp, cache.weight, groups)
              if dx is not None and plan.row_fold else None)
    p = len(plan.ranges(0, g.n))
    dw_shares = ws.get("dw_parts", (p - 1,) + dw_mat.shape, dtype, xp) if p > 1 else None
    db_shares = ws.get("db_parts", (p, g.filters), dtype, xp) if dbias is not None else None

    def part(k: int, a: int, b: int) -> None:
        scope = ws.part(k)
        dw_out = dw_mat if k == 0 else dw_shares[k - 1]
        db_out = None if db_shares is None else db_shares[k]
        if plan.per_sample:
            _per_sample_backward(xp, dy, a, b, cols, w_mat.T, dw_out, db_out, dx, g, scope)
            return
        dy_part = _dy_part(xp, dy, a, b, g, scope)
        if db_out is not None:
            xp.sum(dy_part, axis=1, out=db_out)
        _grouped_dw(xp, dy_part, cols_view(cols, a, b, L), dw_out, groups)
        if dx is None:
            return
        if w_fold is not None:
            _row_fold_dx(xp, dy_part, w_fold, dx, a, g, scope, groups)
            return
        dc_part = scope.get("dcols", (g.rows, (b - a) * L), dtype, xp)
        _grouped_dcols(xp, w_mat.T, dy_part, dc_part, groups)
        _col2im_chunk(dc_part, dx, a, g, scope)

    _run(plan, part, 0, g.n)
    if dw_shares is not None:
        for k in range(p - 1):
            dw_mat += dw_shares[k]
    if db_shares is not None:
        xp.sum(db_shares, axis=0, out=dbias)


def _im2col_backward_chunks(dy: Any, cache: ConvCache, dweight: Any, dbias: Any,
                            dx: Any) -> None:
    """Backward chunk by chunk, the columns recomputed from the kept input (one piece a
    chunk, the copies split between threads)."""
    plan, ws = cache.plan, cache.workspace
    g, groups = plan.geometry, plan.groups
    xp = array_module(dy)
    dtype = dy.dtype
    w_mat = cache.weight.reshape(g.filters, -1)
    dw_mat = dweight.reshape(w_mat.shape)
    w_fold = (conv_rows.fold_weight(xp, cache.weight, groups)
              if dx is not None and plan.row_fold else None)
    for n0 in range(0, g.n, plan.chunk):
        n1 = min(g.n, n0 + plan.chunk)
        m = n1 - n0
        # dY of the chunk in GEMM layout (F, n*L); wide garbage columns must be zero so that
        # they add nothing to dW and produce zero column gradients.
        dy_mat = ws.get("dy_mat", (g.filters, m * g.length), dtype, xp)
        gather_dy(xp, dy, n0, n1, dy_mat, g, zero_garbage=True)
        if dbias is not None:
            dbias += dy_mat.sum(axis=1)
        cols = ws.get("cols", (g.rows, m * g.length), dtype, xp)
        _im2col_chunk(padded_chunk(cache.x, n0, n1, g, ws), cols, g)
        if n0 == 0:
            _grouped_dw(xp, dy_mat, cols, dw_mat, groups)
        else:  # later chunks add their share (a GEMM cannot accumulate through NumPy)
            share = ws.get("dw_part", dw_mat.shape, dtype, xp)
            _grouped_dw(xp, dy_mat, cols, share, groups)
            dw_mat += share
        if dx is None:
            continue
        if w_fold is not None:
            _row_fold_dx(xp, dy_mat, w_fold, dx, n0, g, ws, groups)
            continue
        # The recomputed columns are dead after dW: their buffer takes the column gradients.
        _grouped_dcols(xp, w_mat.T, dy_mat, cols, groups)
        _col2im_chunk(cols, dx, n0, g, ws)


def _per_sample_backward(xp: Any, dy: Any, a: int, b: int, cols: Any, w_t: Any, dw_out: Any,
                         db_out: Any, dx: Any, g: ConvGeometry, ws: Any) -> None:
    """Backward of samples ``a:b`` by per-sample GEMMs on ``dy`` as given (narrow columns, no
    groups): ``dW`` is the sum over samples of ``dY_s (F, L) @ cols_s.T``, the column
    gradients ``W.T @ dY_s`` land directly in the batch layout that col2im reads."""
    m, L = b - a, g.length
    dy3 = dy[a:b].reshape(m, g.filters, L)
    c3 = _per_sample_view(xp, cols, m, L, a * L)
    if db_out is not None:
        xp.sum(dy3, axis=(0, 2), out=db_out)
    dw_each = ws.get("dw_each", (m, g.filters, g.rows), dy.dtype, xp)
    xp.matmul(dy3, c3.transpose(0, 2, 1), out=dw_each)
    xp.sum(dw_each, axis=0, out=dw_out)
    if dx is None:
        return
    dc_part = ws.get("dcols", (g.rows, m * L), dy.dtype, xp)
    xp.matmul(w_t, dy3, out=_per_sample_view(xp, dc_part, m, L))
    _col2im_chunk(dc_part, dx, a, g, ws)


def _row_fold_dx(xp: Any, dy_mat: Any, w_fold: Any, dx: Any, n0: int, g: ConvGeometry,
                 ws: Any, groups: int) -> None:
    """``dx[n0:n0+n]`` from ``dY`` in wide GEMM layout ``dy_mat`` ``(F, n*L)`` (garbage
    columns zero) by the row fold: ``kw`` shifted copies of ``dY`` as the GEMM's inner
    dimension, ``kh`` shifted adds (see :mod:`convtrain.ops.fast.conv_rows`)."""
    shifted = conv_rows.shift_dy(xp, dy_mat, g, ws)
    conv_rows.input_grad(xp, shifted, w_fold, dx, n0, g, ws, groups)


# --- kernel-row columns -------------------------------------------------------------------

def _rows_forward(x: Any, weight: Any, bias: Any, plan: ConvPlan,
                  ws: Workspace) -> tuple[Any, Any]:
    """``y`` on kernel-row columns, chunk by chunk, each chunk as batch parts; returns the
    columns of the last chunk (the whole batch's when kept)."""
    g = plan.geometry
    xp = array_module(x)
    has_bias = bias is not None
    w_rows = conv_rows.forward_weight(xp, weight, bias)
    rows, lq = conv_rows.column_rows(g, has_bias), g.row_length
    y = xp.empty((g.n, g.filters, g.oh, g.ow), dtype=x.dtype)
    columns = None
    for n0 in range(0, g.n, plan.chunk):
        n1 = min(g.n, n0 + plan.chunk)
        columns = ws.get("cols", (rows, (n1 - n0) * lq), x.dtype, xp)

        def part(k: int, a: int, b: int, n0: int = n0, columns: Any = columns) -> None:
            scope = ws.part(k)
            conv_rows.fill_columns(xp, padded_chunk(x, a, b, g, scope), columns,
                                   (a - n0) * lq, g, has_bias)
            conv_rows.forward(xp, cols_view(columns, a - n0, b - n0, lq), w_rows, y, a, g,
                              scope)

        _run(plan, part, n0, n1)
    return y, columns


def _rows_backward(dy: Any, cache: ConvCache, dweight: Any, dbias: Any, dx: Any) -> None:
    """Backward on kernel-row columns: per batch part, ``dY`` gathered and shifted, the
    part's ``dW``/``db`` shares (one GEMM against the columns, kept or recomputed chunk by
    chunk) and ``dx`` by the row fold; the shares summed at the end."""
    plan, ws = cache.plan, cache.workspace
    g = plan.geometry
    xp = array_module(dy)
    dtype = dy.dtype
    rows, lq = conv_rows.column_rows(g, cache.has_bias), g.row_length
    w_fold = conv_rows.fold_weight(xp, cache.weight, 1) if dx is not None else None
    dw_shares = ws.get("dw_rows", (plan.parts, g.filters * g.kw, g.c * g.kh), dtype, xp)
    db_shares = (ws.get("db_parts", (plan.parts, g.filters), dtype, xp)
                 if dbias is not None else None)
    dw_total = None
    for n0 in range(0, g.n, plan.chunk):
        n1 = min(g.n, n0 + plan.chunk)
        columns = cache.cols
        if columns is None:
            columns = ws.get("cols", (rows, (n1 - n0) * lq), dtype, xp)

        def part(k: int, a: int, b: int, n0: int = n0, columns: Any = columns) -> None:
            scope = ws.part(k)
            if cache.cols is None:  # chunked: the forward pass did not keep the columns
                conv_rows.fill_columns(xp, padded_chunk(cache.x, a, b, g, scope), columns,
                                       (a - n0) * lq, g, cache.has_bias)
            dy_part = _dy_part(xp, dy, a, b, g, scope)
            if db_shares is not None:
                xp.sum(dy_part, axis=1, out=db_shares[k])
            shifted = conv_rows.shift_dy(xp, dy_part, g, scope)
            conv_rows.weight_grad(xp, shifted, cols_view(columns, a - n0, b - n0, lq),
                                  dw_shares[k], g)
            if dx is not None:
                conv_rows.input_grad(xp, shifted, w_fold, dx, a, g, scope, 1)

        used = _run(plan, part, n0, n1)
        chunk_dw = dw_shares[0] if used == 1 else dw_shares[:used].sum(axis=0)
        dw_total = chunk_dw.copy() if dw_total is None else dw_total + chunk_dw
        if dbias is not None:
            dbias += db_shares[:used].sum(axis=0)
    if dw_total is not None:  # an empty batch leaves dweight (and dbias) zero
        conv_rows.split_weight_grad(xp, dw_total, dweight)


# --- shared pieces ------------------------------------------------------------------------

def _dy_part(xp: Any, dy: Any, a: int, b: int, g: ConvGeometry, ws: Any) -> Any:
    """Samples ``a:b`` of ``dy`` in GEMM layout ``(F, (b-a)*L)``, in a marked workspace buffer
    whose wide garbage columns stay zero between calls (only valid ones are written)."""
    dy_part, fresh = ws.get_marked("dy_mat", (g.filters, (b - a) * g.length),
                                   dy.dtype, xp, ("dy_mat", g, b - a))
    gather_dy(xp, dy, a, b, dy_part, g, zero_garbage=fresh)
    return dy_part


def _per_sample_view(xp: Any, mat: Any, n: int, length: int, col0: int = 0) -> Any:
    """``(n, rows, L)`` view of columns ``col0:col0 + n*L`` of the C-contiguous
    ``mat (rows, >= n*L)`` (one matrix per sample)."""
    return flat_view(xp, mat, (n, mat.shape[0], length), (length, mat.shape[1], 1), col0)


def _col2im_chunk(dcols: Any, dx: Any, n0: int, g: ConvGeometry, ws: Any) -> None:
    """Fold ``dcols (rows, n*L)`` (possibly a column slice of a wider matrix) back (summing
    overlaps) into ``dx[n0:n0+n]`` (N, C, H, W)."""
    xp = array_module(dcols)
    n = dcols.shape[1] // g.length
    # Accumulate in (C, n, Hp, Wp) order, matching the column blocks, so that every shifted
    # add reads its source contiguously; one transposing copy per chunk gives (N, C, H, W).
    acc = ws.get("dx_padded", (g.c, n, g.hp, g.wp), dcols.dtype, xp)
    r = dcols.strides[0] // dcols.itemsize
    kk = g.kh * g.kw
    if g.wide:
        src = flat_view(xp, dcols, (g.c, g.kh, g.kw, n, g.length),
                         (kk * r, g.kw * r, r, g.length, 1))
    else:
        src = flat_view(xp, dcols, (g.c, g.kh, g.kw, n, g.oh, g.ow),
                         (kk * r, g.kw * r, r, g.oh * g.ow, g.ow, 1))
    rows_last = g.sh * (g.oh - 1) + 1
    cols_last = g.sw * (g.ow - 1) + 1

    def fold(a: int, b: int) -> None:
        # Channels are independent: each thread owns a block of them.
        part = acc[a:b]
        part[...] = 0
        if g.wide:
            flat = part.reshape(b - a, n, g.hp * g.wp)
            for i in range(g.kh):
                for j in range(g.kw):
                    start = i * g.dh * g.wp + j * g.dw
                    flat[:, :, start:start + g.length] += src[a:b, i, j]
        else:
            for i in range(g.kh):
                r0 = i * g.dh
                for j in range(g.kw):
                    c0 = j * g.dw
                    part[:, :, r0:r0 + rows_last:g.sh, c0:c0 + cols_last:g.sw] += src[a:b, i, j]
        dx[n0:n0 + n, a:b] = part[:, :, g.ph:g.ph + g.h, g.pw:g.pw + g.w].transpose(1, 0, 2, 3)

    if g.c >= 2:
        run_split(fold, g.c, 2 * acc.nbytes + dcols.nbytes, xp)
    else:
        fold(0, g.c)


def _grouped_dw(xp: Any, dy_mat: Any, cols: Any, out: Any, groups: int) -> None:
    """``out[group] = dY[group] @ cols[group].T`` per group (out rows: filters)."""
    for rows, filt in reference.group_blocks(cols.shape[0], dy_mat.shape[0], groups):
        xp.matmul(dy_mat[filt], cols[rows].T, out=out[filt])


def _grouped_dcols(xp: Any, w_t: Any, dy_mat: Any, out: Any, groups: int) -> None:
    """``out[group rows] = W[group].T @ dY[group]``; ``w_t`` is ``W_mat.T (rows/g, F)``."""
    for rows, filt in reference.group_blocks(out.shape[0], dy_mat.shape[0], groups):
        xp.matmul(w_t[:, filt], dy_mat[filt], out=out[rows])
