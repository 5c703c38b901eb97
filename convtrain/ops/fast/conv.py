"""2-D convolution (cross-correlation, as in every deep-learning library) via im2col + GEMM.

Forward:  ``Y_mat (F, n*L) = W_mat (F, C*kh*kw) @ cols (C*kh*kw, n*L)`` per chunk of ``n``
samples. Backward: ``dW_mat += dY_mat @ cols.T`` and ``dcols = W_mat.T @ dY_mat`` folded back by
a col2im. Grouped convolutions run one GEMM per group on the group's contiguous block of rows.
Stride-1 layers may instead run on kernel-row columns (:mod:`convtrain.ops.fast.conv_rows`); the
geometry and the strided views between layouts live in :mod:`convtrain.ops.fast.layout`.

Performance notes (measured on 2 cores, float32; see DESIGN.md "Engine notes"):

* **Wide columns for stride 1.** With stride 1, the window at output ``(y, x)`` and kernel
  offset ``(i, j)`` starts at flat position ``(y + i*dh)*Wp + x + j*dw`` of the padded
  ``Hp x Wp`` image, i.e. a *shift* of a flat output position ``p = y*Wp + x``. Taking one
  column per ``p`` in ``[0, (oh-1)*Wp + ow)`` (``ow..Wp-1`` of every row but the last are
  "garbage" columns that are dropped from ``Y`` and zeroed in ``dY``) makes every im2col row a
  single contiguous run of the input and every col2im step a shifted add of long runs: 2-2.5x
  faster than ``(oh, ow)`` columns whose inner runs are only ``ow`` long, for ``Wp/ow`` extra
  GEMM columns (1.06x-1.4x on the benchmark layers); :func:`_use_wide_columns` decides.
  Strided convolutions use ``(oh, ow)`` columns.
* **Chunks under a workspace limit.** The batch is processed in chunks of samples whose
  scratch memory fits :func:`convtrain.ops.set_max_workspace_mb` (default 256 MiB). When the
  whole batch is one chunk the columns are kept for the backward pass; otherwise they are
  recomputed chunk by chunk there, so memory stays bounded by the limit. (Cache-sized chunks
  were tried for speed and lost, see ``_TARGET_CHUNK_BYTES``.)
* **Reused buffers.** Scratch arrays come from a :class:`~convtrain.runtime.workspace.Workspace`
  that layers keep between calls (page faults on fresh buffers cost as much as the copy).
* **Batch parts on the engine's threads.** When the whole batch is one chunk (the usual
  case; kernel-row columns do the same inside every chunk) and threadpoolctl can set the BLAS
  to one thread, the batch is cut into one part per engine thread and each thread runs its part start to end (pad, im2col, its own
  single-threaded GEMMs, bias + layout, col2im), the parts' ``dW``/``db`` shares summed at the
  end (:func:`_forward_parts`, :func:`_backward_parts`). Measured against one 2-thread
  OpenBLAS GEMM between thread-split copies (2 cores): fwd+bwd (c) 98 -> 90 ms, (d) 72 ->
  60 ms, (e) 84 -> 65 ms, and the LeNet-5 step ~18 -> ~14.5 ms, because no OpenBLAS worker is
  woken (it would busy-wait ~0.1 s on the second core after every GEMM, starving the engine's
  own thread). Work under 1 MiB of columns a part runs on the calling thread alone instead
  (:data:`_MIN_PART_COLUMN_BYTES`; a thread wake-up costs ~50 us and the two threads share
  the memory bus). Without threadpoolctl the old path runs (the copies split between threads).
* **Persistent zeros.** The zero border of the padded input and the zero "garbage" columns of
  ``dY`` in wide layout live in per-layer buffers that are only rewritten when the layout
  changes (:meth:`~convtrain.runtime.workspace.Workspace.get_marked`).
* **Row fold for the input gradient** (stride 1, when it moves less memory; see
  :func:`_use_row_fold`): the kernel's column offsets go into the GEMM's inner dimension
  (``kw`` shifted copies of ``dY``), so only ``C*kh`` rows come out of it and ``kh`` shifted
  adds fold them, instead of ``C*kh*kw`` column-gradient rows and ``kh*kw`` adds. Layer (b)
  fwd+bwd 4.4 -> 3.3 ms. This machine's copies are bound by memory bandwidth (a second thread
  adds nothing to a 2.6 MB im2col), so moving fewer bytes is what pays.
* **Kernel-row columns** (stride 1, no groups, when they move less memory; see
  :func:`_use_row_columns` and :mod:`~convtrain.ops.fast.conv_rows`): only ``C*kh`` column rows
  are copied, the ``kw`` column offsets folded out of the forward GEMM's ``F*kw`` result rows,
  and ``dW`` comes from the shifted ``dY`` that the row-fold input gradient builds anyway.
  fwd+bwd vs im2col: a 16->16 3x3 layer on 28x28 0.87, (b) at batch 128 ~0.96, at 64 ~1.0.
* **A head start for the calling thread** (:func:`_part_ranges`): its batch part is longer by
  about one thread wake-up of work, so both parts end together ((b) fwd+bwd ~4 % faster).
* **Per-sample GEMMs for narrow columns** (NumPy, no groups, fewer column rows than output
  pixels; :func:`_per_sample_gemms`): each sample's ``(F, oh*ow)`` result is written straight
  into ``y`` and ``dY`` is used as given, saving the layout copies. Time, per-sample / batch
  GEMM: LeNet-5 conv1 in training (batch 128, no ``dx``) 0.74 (5.56 -> 4.10 ms), (a) 0.95, a
  16->32 3x3 stride-2 layer 0.93, (e) 1.01.
* Cache-sized sub-chunks inside a part were measured and lost
  (256 KiB-2 MiB: up to 3x slower on (a)/(b), per-call overhead of the kh*kw loops), so a part
  is one piece.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

import numpy as np  # only to tell NumPy arrays from CuPy ones (`xp is np`)

from convtrain.runtime.backend import array_module
from convtrain.ops.fast import conv_rows
from convtrain.ops._checks import require_float, require_ndim, require_same_dtype, require_shape
from convtrain.ops.fast.layout import (ConvGeometry, cols_view, flat_view, gather_dy,
                                          grouped_gemm, padded_chunk, write_output)
from convtrain.ops.im2col import output_hw, pair
from convtrain.runtime.threads import (can_run_parts, get_num_threads, run_alone, run_parts,
                                       run_split, split_ranges)
from convtrain.runtime.workspace import (Workspace, check_workspace_mb, get_max_workspace_mb,
                                        scratch_or)
from convtrain.errors import ConfigError

_OP = "conv2d"

#: Preferred scratch bytes per chunk, for cache blocking. None: one chunk whenever the
#: workspace limit allows. Measured on this machine (L2 1 MiB/core, L3 32 MiB), cache-sized
#: chunks (2-16 MiB) with recomputed columns were 3-40% SLOWER than one chunk with kept columns
#: on every benchmark layer (the GEMMs dominate and lose efficiency on narrow chunks), so
#: chunking is left to the workspace limit.
_TARGET_CHUNK_BYTES: int | None = None


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs from the forward pass."""

    x: Any  # the input (N, C, H, W) when columns are recomputed per chunk, else None
    cols: Any  # (C*kh*kw, N*L) columns of the whole batch when kept, else None
    weight: Any  # (F, C//groups, kh, kw)
    geometry: ConvGeometry
    has_bias: bool
    groups: int
    chunk: int  # samples per chunk
    workspace: Workspace  # scratch buffers (the layer's, or throw-away ones)
    generation: int  # the workspace generation this cache's buffers belong to
    method: str = "im2col"  # "im2col", or "rows": kernel-row columns (conv_rows), cols = them


def _check_groups(groups: Any, in_channels: int, weight_shape: tuple[int, ...]) -> int:
    if isinstance(groups, bool) or not isinstance(groups, Integral) or groups < 1:
        raise ConfigError(f"{_OP}: groups must be a positive int, got {groups!r}")
    filters, per_group = weight_shape[0], weight_shape[1]
    if in_channels % groups != 0:
        raise ConfigError(
            f"{_OP}: input channels {in_channels} are not divisible by groups {groups}"
        )
    if filters % groups != 0:
        raise ConfigError(f"{_OP}: filters {filters} are not divisible by groups {groups}")
    if per_group * groups != in_channels:
        raise ConfigError(
            f"{_OP}: input has {in_channels} channels but weight {tuple(weight_shape)} expects "
            f"{per_group} per group x groups {groups} = {per_group * groups}"
        )
    return int(groups)


def _chunk_size(g: ConvGeometry, itemsize: int, max_workspace_mb: Any,
                row_columns: bool = False) -> int:
    """Samples per chunk: as many as fit both the cache target and the workspace limit
    (at least one: a single sample larger than the limit still runs, one at a time)."""
    # Scratch per sample: columns, Y and dY in GEMM layout, the padded input and the padded dx
    # accumulator; keeping the columns for the backward pass (one chunk) adds their gradient
    # buffer, while recomputing them lets the gradient reuse the column buffer.
    common = 2 * g.filters * g.length + 2 * g.c * g.hp * g.wp
    if row_columns:
        # kernel-row columns (+ ones), the F*kw-row GEMM result, the folded output, shifted
        # dY and the dx rows, plus dY in GEMM layout; all per sample and the same whether the
        # columns are kept or recomputed
        rows = (2 * g.c * g.kh + 1 + 2 * g.filters * g.kw + g.filters) * g.row_length
        per_sample_kept = per_sample_chunked = itemsize * (
            rows + g.filters * g.length + 2 * g.c * g.hp * g.wp)
    elif _use_row_fold(g):  # shifted dY rows and folded rows instead of the column gradient
        dx_rows = (g.filters * g.kw + g.c * g.kh) * g.row_length
        per_sample_kept = itemsize * (g.rows * g.length + dx_rows + common)
        per_sample_chunked = per_sample_kept
    else:
        per_sample_kept = itemsize * (2 * g.rows * g.length + common)
        per_sample_chunked = itemsize * (g.rows * g.length + common)
    budgets = [b for b in (_TARGET_CHUNK_BYTES,) if b is not None]
    limit_mb = get_max_workspace_mb() if max_workspace_mb is None else max_workspace_mb
    if limit_mb is not None:
        budgets.append(limit_mb * 2**20)
    if not budgets or g.n * per_sample_kept <= min(budgets):
        return max(1, g.n)  # an empty batch still needs a non-zero loop step
    return max(1, min(g.n - 1, int(min(budgets) // per_sample_chunked)))


_NARROW_SINGLE_CHANNEL = True  # see _use_wide_columns


def _use_wide_columns(sh: int, sw: int, oh: int, ow: int, wp: int, filters: int,
                      channels: int = 2) -> bool:
    """Wide columns (stride 1 only) make the copies 2-2.5x faster but every GEMM
    ``(wp*(oh-1) + ow) / (oh*ow)`` times longer. Single-thread CPU time on this machine:
    32->64 at 32x32 (6% extra columns) 168 -> 129 ms fwd+bwd, but 64->128 at 16x16 (12% extra,
    twice the filters) 110 -> 115 ms. The GEMM cost grows with ``filters``, the copy saving does
    not, hence this rule (extra fraction x filters below 8).

    A single input channel gets narrow columns: such a layer is nearly always a model's first,
    whose input gradient training skips, and there the copies saved are small (one channel)
    while the narrow GEMMs are shorter and the output / ``dY`` layout copies run over whole
    ``oh*ow`` rows. LeNet-5's conv1 in the training step (batch 128, no ``dx``): 6.0 -> 5.0 ms
    fwd+bwd, the whole step ~5% faster; with ``dx`` (benchmark case (a)) it is ~15% slower."""
    if sh != 1 or sw != 1 or (channels == 1 and _NARROW_SINGLE_CHANNEL):
        return False
    extra = ((oh - 1) * wp + ow) / (oh * ow) - 1
    return extra * filters < 8


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


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = (1, 1),
                   padding: Any = (0, 0), dilation: Any = (1, 1), groups: int = 1, *,
                   workspace: Workspace | None = None,
                   max_workspace_mb: float | None = None) -> tuple[Any, ConvCache]:
    """Convolve a batch.

    Args:
        x: ``(N, C, H, W)`` float32/float64.
        weight: ``(F, C//groups, kh, kw)``, same dtype as ``x``.
        bias: ``(F,)`` or None.
        stride, padding, dilation: ints or ``(h, w)`` pairs; padding is already resolved ints.
        groups: input and output channels are split into this many independent groups.
        workspace: scratch buffers to reuse across calls (a layer's); None allocates fresh
            ones. The returned cache refers to them, so it is valid until the next forward pass
            through the same workspace.
        max_workspace_mb: cap on the scratch memory for this call (MiB); None uses the
            process-wide :func:`~convtrain.ops.set_max_workspace_mb` setting. Over it, the
            batch is processed in chunks of samples (results are identical up to float rounding
            of the weight-gradient sum).

    Returns:
        ``(y, cache)`` with ``y`` of shape ``(N, F, oh, ow)`` and dtype of ``x``.
    """
    require_ndim(x, 4, _OP, "x", "(N, C, H, W)")
    require_ndim(weight, 4, _OP, "weight", "(F, C//groups, kh, kw)")
    require_float(x, _OP, "x")
    require_same_dtype(_OP, "x", x, weight=weight, bias=bias)
    n, c = int(x.shape[0]), int(x.shape[1])
    filters, per_group, kh, kw = (int(s) for s in weight.shape)
    groups = _check_groups(groups, c, tuple(weight.shape))
    if bias is not None:
        require_shape(bias, (filters,), _OP, "bias")
    (sh, sw), (ph, pw), (dh, dw) = (pair(stride, "stride"), pair(padding, "padding"),
                                    pair(dilation, "dilation"))
    oh, ow = output_hw(x.shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    max_workspace_mb = check_workspace_mb(max_workspace_mb)
    wp = int(x.shape[3]) + 2 * pw
    wide = _use_wide_columns(sh, sw, oh, ow, wp, filters, c)
    g = ConvGeometry(n, c, int(x.shape[2]), int(x.shape[3]), filters, kh, kw, sh, sw, ph, pw,
                     dh, dw, oh, ow, wide, (oh - 1) * wp + ow if wide else oh * ow)

    xp = array_module(x)
    ws = scratch_or(workspace)
    row_columns = _use_row_columns(g, groups)
    chunk = _chunk_size(g, x.dtype.itemsize, max_workspace_mb, row_columns)
    if row_columns:
        return _row_columns_forward(x, weight, bias, g, ws, chunk)
    keep_cols = chunk >= n
    w_mat = weight.reshape(filters, per_group * kh * kw)
    y = xp.empty((n, filters, oh, ow), dtype=x.dtype)
    bias4 = None if bias is None else bias.reshape(filters, 1, 1, 1)
    if keep_cols and n > 0:
        cols = _forward_parts(x, w_mat, bias4, y, g, ws, groups,
                              *_plan_parts(g, xp, x.dtype.itemsize))
        cache = ConvCache(None, cols, weight, g, bias is not None, groups, chunk, ws,
                          ws.next_generation())
        return y, cache
    # Chunked (over the workspace cap): the backward pass recomputes each chunk's columns.
    for n0 in range(0, n, chunk):
        n1 = min(n, n0 + chunk)
        m = n1 - n0
        cols = ws.get("cols", (g.rows, m * g.length), x.dtype, xp)
        _im2col_chunk(padded_chunk(x, n0, n1, g, ws), cols, g)
        y_mat = ws.get("y_mat", (filters, m * g.length), x.dtype, xp)
        grouped_gemm(xp, w_mat, cols, y_mat, groups)
        write_output(xp, y_mat, y, n0, n1, g, bias4)
    cache = ConvCache(x, None, weight, g, bias is not None, groups, chunk, ws,
                      ws.next_generation())
    return y, cache


def _num_parts(n: int, xp: Any) -> int:
    """How many batch parts of ``n`` samples run side by side on the engine's threads (1: one
    piece, with the copies split between threads and a multi-threaded BLAS GEMM)."""
    if xp is not np or n < 2 or not _USE_PARTS or not can_run_parts():
        return 1
    return min(get_num_threads(), n)


#: Below this many bytes of im2col columns per batch part, a convolution runs on the calling
#: thread alone (single-threaded BLAS, copies not split): waking a second thread and sharing
#: the memory bus with it cost more than it saves. Measured fwd+bwd, one thread / two parts
#: (2 cores, float32): layer (b) at batch 16 (0.62 MB a part) 0.89, 24 (0.93 MB) 1.02, 32
#: (1.25 MB) 1.03; (a) at batch 8 (0.30 MB) 0.62, 16 (0.60 MB) 0.80, 32 (1.2 MB) 1.19;
#: (c) at batch 2 (1.19 MB) 1.47.
_MIN_PART_COLUMN_BYTES = 1 << 20


def _plan_parts(g: ConvGeometry, xp: Any, itemsize: int,
                n: int | None = None) -> tuple[int, bool]:
    """``(parts, alone)``: the batch parts of a convolution over ``n`` samples (default: the
    whole batch), and whether its one part runs on the calling thread alone
    (:data:`_MIN_PART_COLUMN_BYTES`; the work is measured in im2col columns whichever column
    layout runs, since it stands for the layer's size)."""
    n = g.n if n is None else n
    parts = _num_parts(n, xp)
    per_part = -(-n // parts) if parts > 1 else n
    if parts > 1 and g.rows * g.length * per_part * itemsize < _MIN_PART_COLUMN_BYTES:
        return 1, True
    return parts, False


#: Seconds of work the calling thread's batch part gets beyond an equal share. The calling
#: thread starts on its part at once, the worker only after its wake-up (20-80 us on this VM,
#: see parallel.py), and a caller that finishes first sleeps until the worker is done and then
#: pays a wake-up itself; a head start of about one wake-up ends both parts together. Measured
#: on layer (b) fwd+bwd at batch 64, 0/1/2/3/4 extra caller samples in both directions:
#: 2.46 / 2.40 / 2.40 / 2.33 / 2.36 ms. 0 turns it off.
_CALLER_HEAD_START_S = 70e-6
#: Work rate assumed to turn a sample's GEMM FLOPs into seconds for the head start (one thread,
#: GEMMs and copies together: layer (b) runs at ~30-60 GFLOP/s a thread).
_ASSUMED_FLOPS_PER_S = 40e9


def _part_ranges(n0: int, n1: int, parts: int, g: ConvGeometry,
                 groups: int) -> list[tuple[int, int]]:
    """Samples ``n0:n1`` cut into ``parts`` ranges, the first (the calling thread's) longer by
    the samples that :data:`_CALLER_HEAD_START_S` of work takes (at most 1/8 of another
    part), the others shorter by as many between them.

    A sample's work is taken as 1.5 forward GEMMs (the mean of the forward pass and a backward
    pass with ``dx``), so the forward and backward passes, with or without ``dx``, split the
    batch alike: ``dW`` sums the parts' shares, and the same split keeps it bitwise the same.
    The split depends on the shapes only, so results stay reproducible run to run."""
    ranges = [(n0 + a, n0 + b) for a, b in split_ranges(n1 - n0, parts)]
    if len(ranges) < 2 or _CALLER_HEAD_START_S <= 0:
        return ranges
    flops = 1.5 * 2.0 * g.filters * (g.c // groups) * g.kh * g.kw * g.length
    sizes = [b - a for a, b in ranges]
    extra = min(int(_CALLER_HEAD_START_S * _ASSUMED_FLOPS_PER_S / max(flops, 1.0) + 0.5),
                min(sizes[1:]) // 8)
    sizes[0] += extra
    for i in range(extra):
        sizes[1 + i % (len(sizes) - 1)] -= 1
    bounds = [n0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    return list(zip(bounds[:-1], bounds[1:]))


#: Run whole-batch convolutions as batch parts on the engine's threads (each part: padding,
#: im2col, a single-threaded GEMM, bias + layout) instead of one multi-threaded GEMM between
#: thread-split copies. See :func:`_forward_parts`.
_USE_PARTS = True


def _forward_parts(x: Any, w_mat: Any, bias4: Any, y: Any, g: ConvGeometry, ws: Workspace,
                   groups: int, parts: int, alone: bool = False) -> Any:
    """Whole-batch forward: samples split into ``parts`` ranges, each run start to end on its
    own thread with a single-threaded BLAS (pad, im2col into the kept columns, GEMM into a
    per-thread buffer, bias + transpose into ``y``).
    Returns the ``(rows, n*L)`` columns (kept for the backward pass)."""
    xp = array_module(x)
    n, L = g.n, g.length
    cols = ws.get("cols", (g.rows, n * L), x.dtype, xp)

    per_sample = _per_sample_gemms(g, groups, xp)

    def part(k: int, a: int, b: int) -> None:
        c_part = cols_view(cols, a, b, L)
        _im2col_chunk(padded_chunk(x, a, b, g, ws, f"x_padded{k}"), cols, g, a * L)
        if per_sample:
            # One GEMM per sample writes (F, oh*ow) straight into y: no layout copy.
            y3 = y[a:b].reshape(b - a, g.filters, L)
            xp.matmul(w_mat, _per_sample_view(xp, cols, b - a, L, a * L), out=y3)
            if bias4 is not None:
                xp.add(y3, bias4.reshape(g.filters, 1), out=y3)
            return
        y_part = ws.get(f"y_mat{k}", (g.filters, (b - a) * L), x.dtype, xp)
        grouped_gemm(xp, w_mat, c_part, y_part, groups)
        write_output(xp, y_part, y, a, b, g, bias4)

    (run_alone if alone else run_parts)(part, _part_ranges(0, n, parts, g, groups))
    return cols

#: Narrow-column convolutions may run one GEMM per sample, whose ``(F, oh*ow)`` result IS the
#: sample's output (and whose ``dY`` operand is the sample's gradient as given), instead of one
#: GEMM over the batch plus layout copies between ``(F, n*oh*ow)`` and ``(n, F, oh, ow)``
#: (see :func:`_per_sample_gemms`; False turns them off, for tests).
_PER_SAMPLE_GEMM = True


def _per_sample_gemms(g: ConvGeometry, groups: int, xp: Any) -> bool:
    """Whether the parts run per-sample GEMMs: NumPy (CuPy's matmul copies strided operands,
    so there it would add copies instead of saving them), narrow columns, no groups, and
    fewer column rows ``C*kh*kw`` than output pixels ``oh*ow``. The layout copies saved are
    ``F*oh*ow`` per sample each way; the per-sample dW shares (summed afterwards) cost
    ``F*C*kh*kw`` each and the GEMMs get shorter, so deep layers on small images lose: time,
    per-sample / batch GEMM, 128->256 3x3 stride 2 on 8x8 (rows 1152, pixels 16) 1.85,
    (d) 64->128 3x3 16x16 (rows 576, pixels 256) 1.02; LeNet-5 conv1 (25, 784) 0.74."""
    return (_PER_SAMPLE_GEMM and xp is np and not g.wide and groups == 1
            and g.rows < g.oh * g.ow)


def _per_sample_view(xp: Any, mat: Any, n: int, length: int, col0: int = 0) -> Any:
    """``(n, rows, L)`` view of columns ``col0:col0 + n*L`` of the C-contiguous
    ``mat (rows, >= n*L)`` (one matrix per sample)."""
    return flat_view(xp, mat, (n, mat.shape[0], length), (length, mat.shape[1], 1), col0)


def _col2im_chunk(dcols: Any, dx: Any, n0: int, g: ConvGeometry, ws: Workspace,
                  name: str = "dx_padded") -> None:
    """Fold ``dcols (rows, n*L)`` (possibly a column slice of a wider matrix) back (summing
    overlaps) into ``dx[n0:n0+n]`` (N, C, H, W)."""
    xp = array_module(dcols)
    n = dcols.shape[1] // g.length
    # Accumulate in (C, n, Hp, Wp) order, matching the column blocks, so that every shifted
    # add reads its source contiguously; one transposing copy per chunk gives (N, C, H, W).
    acc = ws.get(name, (g.c, n, g.hp, g.wp), dcols.dtype, xp)
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


#: How the input gradient of a stride-1 (wide-column) convolution is folded back: "auto"
#: (by :func:`_use_row_fold`'s memory-traffic rule), "row_fold" or "col2im" (tests force each).
_INPUT_GRAD_METHOD = "auto"


def _use_row_fold(g: ConvGeometry) -> bool:
    """Whether ``dx`` is computed by the row fold (:func:`_row_fold_dx`) instead of the full
    column gradient + col2im.

    The col2im route writes ``C*kh*kw`` column-gradient rows and folds them back with
    ``kh*kw`` shifted adds (each a read-modify-write); the row fold copies ``F*kw`` shifted
    rows of ``dY`` and folds ``C*kh`` rows with ``kh`` adds. Same GEMM FLOPs either way, so
    the rule compares the rows of memory traffic (copy: read + write; fold: write, read, RMW)
    and takes the fold when it moves under 3/4 of col2im's. Measured fwd+bwd, row fold /
    col2im (2 cores, float32, interleaved medians): (b) 6->16 5x5 b64 0.76, the same at b128
    0.83, 16->16 3x3 28x28 0.83 (traffic 0.56 of col2im's: chosen); (c) 32->64 3x3 0.99
    (traffic 0.78: not chosen); 3->16 3x3 1.09 (traffic 1.5: not chosen). ((d) has narrow
    columns, so neither applies there.)"""
    if not g.wide or _INPUT_GRAD_METHOD == "col2im":
        return False
    if _INPUT_GRAD_METHOD == "row_fold":
        return True
    return 4 * (2 * g.filters * g.kw + 3 * g.c * g.kh) < 3 * (3 * g.c * g.kh * g.kw)


def _row_fold_dx(xp: Any, dy_mat: Any, w_fold: Any, dx: Any, n0: int, g: ConvGeometry,
                 ws: Workspace, groups: int, suffix: str = "") -> None:
    """``dx[n0:n0+n]`` from ``dY`` in wide GEMM layout ``dy_mat`` ``(F, n*L)`` (garbage
    columns zero) by the row fold: ``kw`` shifted copies of ``dY`` as the GEMM's inner
    dimension, ``kh`` shifted adds (see :mod:`convtrain.ops.fast.conv_rows`)."""
    shifted = conv_rows.shift_dy(xp, dy_mat, g, ws, suffix)
    conv_rows.input_grad(xp, shifted, w_fold, dx, n0, g, ws, groups, suffix)


#: How a stride-1 (wide-column) convolution without groups lays out its columns: "auto" (by
#: :func:`_use_row_columns`'s rule), "rows" (kernel-row columns) or "im2col" (tests force each).
_COLUMNS_METHOD = "auto"


def _use_row_columns(g: ConvGeometry, groups: int) -> bool:
    """Whether the convolution runs on kernel-row columns (:mod:`~convtrain.ops.fast.conv_rows`)
    instead of im2col columns: stride 1 with wide columns, no groups, and under 3/4 of
    im2col's memory traffic.

    Traffic per sample, in column rows: im2col writes ``C*kh*kw`` rows that the forward and
    the ``dW`` GEMMs read again (3x); kernel-row columns are ``C*kh`` rows (3x as well), but
    the forward GEMM writes ``F*kw`` rows that the fold reads back (2x). (The shifted ``dY``
    both share when the input gradient takes the row fold.) Measured fwd+bwd through the
    engine, kernel-row / im2col (2 cores, float32, batch parts, interleaved medians of 15
    blocks): 16->16 3x3 on 28x28 at batch 64 0.86-0.87 (traffic 0.56: chosen); layer (b) 6->16
    5x5 at batch 128 0.94-0.98, at batch 64 0.97-1.03 (0.56: chosen); (c) 32->64 3x3 0.98-0.99
    (0.78: not chosen); 3->16 3x3 1.21 (1.5: not chosen)."""
    if not g.wide or groups != 1 or _COLUMNS_METHOD == "im2col":
        return False
    if _COLUMNS_METHOD == "rows":
        return True
    return 4 * (3 * g.c * g.kh + 2 * g.filters * g.kw) < 3 * (3 * g.rows)


def _run_ranges(fn: Any, n0: int, n1: int, g: ConvGeometry, xp: Any, itemsize: int,
                chunk: int) -> int:
    """``fn(k, a, b)`` over samples ``n0:n1`` cut into batch parts (:func:`_part_ranges`).
    Whether they run as parts or alone (:func:`_plan_parts`) is decided for a full ``chunk``
    of samples, so a shorter last chunk is cut the same way and no part's scratch buffers
    outgrow a full chunk's (the workspace limit holds). Returns the number of parts."""
    parts, alone = _plan_parts(g, xp, itemsize, chunk)
    ranges = _part_ranges(n0, n1, parts, g, 1)
    (run_alone if alone else run_parts)(fn, ranges)
    return len(ranges)


def _row_columns_forward(x: Any, weight: Any, bias: Any, g: ConvGeometry, ws: Workspace,
                         chunk: int) -> tuple[Any, ConvCache]:
    """:func:`conv2d_forward` on kernel-row columns, chunk by chunk (one chunk: the whole
    batch, whose columns are kept for the backward pass), each chunk as batch parts."""
    xp = array_module(x)
    has_bias = bias is not None
    w_rows = conv_rows.forward_weight(xp, weight, bias)
    rows, lq = conv_rows.column_rows(g, has_bias), g.row_length
    y = xp.empty((g.n, g.filters, g.oh, g.ow), dtype=x.dtype)
    columns = None
    for n0 in range(0, g.n, chunk):
        n1 = min(g.n, n0 + chunk)
        columns = ws.get("cols", (rows, (n1 - n0) * lq), x.dtype, xp)

        def part(k: int, a: int, b: int, n0: int = n0, columns: Any = columns) -> None:
            c_part = cols_view(columns, a - n0, b - n0, lq)
            conv_rows.fill_columns(xp, padded_chunk(x, a, b, g, ws, f"x_padded{k}"), columns,
                                   (a - n0) * lq, g, has_bias)
            conv_rows.forward(xp, c_part, w_rows, y, a, g, ws, str(k))

        _run_ranges(part, n0, n1, g, xp, x.dtype.itemsize, min(chunk, g.n))
    keep = chunk >= g.n
    cache = ConvCache(None if keep else x, columns if keep else None, weight, g, has_bias, 1,
                      chunk, ws, ws.next_generation(), "rows")
    return y, cache


def _row_columns_backward(dy: Any, cache: ConvCache, dweight: Any, dbias: Any,
                          dx: Any) -> None:
    """:func:`conv2d_backward` on kernel-row columns: per batch part, ``dY`` gathered and
    shifted, the part's ``dW``/``db`` shares (one GEMM against the columns, kept or recomputed
    chunk by chunk) and ``dx`` by the row fold; the shares summed at the end."""
    g, ws = cache.geometry, cache.workspace
    xp = array_module(dy)
    dtype = dy.dtype
    rows, lq = conv_rows.column_rows(g, cache.has_bias), g.row_length
    w_fold = conv_rows.fold_weight(xp, cache.weight, 1) if dx is not None else None
    parts = _num_parts(min(g.n, cache.chunk), xp)
    dw_shares = ws.get("dw_rows", (parts, g.filters * g.kw, g.c * g.kh), dtype, xp)
    db_shares = ws.get("db_parts", (parts, g.filters), dtype, xp) if dbias is not None else None
    dw_total = None
    for n0 in range(0, g.n, cache.chunk):
        n1 = min(g.n, n0 + cache.chunk)
        columns = cache.cols
        if columns is None:
            columns = ws.get("cols", (rows, (n1 - n0) * lq), dtype, xp)

        def part(k: int, a: int, b: int, n0: int = n0, columns: Any = columns) -> None:
            c_part = cols_view(columns, a - n0, b - n0, lq)
            if cache.cols is None:  # chunked: the forward pass did not keep the columns
                conv_rows.fill_columns(xp, padded_chunk(cache.x, a, b, g, ws, f"x_padded{k}"),
                                       columns, (a - n0) * lq, g, cache.has_bias)
            dy_part = _dy_part(xp, dy, a, b, g, ws, str(k))
            if db_shares is not None:
                xp.sum(dy_part, axis=1, out=db_shares[k])
            shifted = conv_rows.shift_dy(xp, dy_part, g, ws, str(k))
            conv_rows.weight_grad(xp, shifted, c_part, dw_shares[k], g)
            if dx is not None:
                conv_rows.input_grad(xp, shifted, w_fold, dx, a, g, ws, 1, str(k))

        used = _run_ranges(part, n0, n1, g, xp, dtype.itemsize, min(cache.chunk, g.n))
        chunk_dw = dw_shares[0] if used == 1 else dw_shares[:used].sum(axis=0)
        dw_total = chunk_dw.copy() if dw_total is None else dw_total + chunk_dw
        if dbias is not None:
            dbias += db_shares[:used].sum(axis=0)
    if dw_total is not None:  # an empty batch leaves dweight (and dbias) zero
        conv_rows.split_weight_grad(xp, dw_total, dweight)


def conv2d_backward(dy: Any, cache: ConvCache,
                    input_grad: bool = True) -> tuple[Any, Any, Any]:
    """Gradients of a convolution.

    Args:
        dy: ``(N, F, oh, ow)``, gradient of the loss w.r.t. the forward output.
        cache: from :func:`conv2d_forward`.
        input_grad: False skips ``dx`` (returned as None), e.g. for a model's first layer,
            saving the ``W.T @ dY`` GEMM and the col2im.

    Returns:
        ``(dx, dweight, dbias)`` shaped like ``x``, ``weight`` and ``bias``; ``dbias`` is None
        when the forward pass had no bias.
    """
    g, weight, groups, ws = cache.geometry, cache.weight, cache.groups, cache.workspace
    if not ws.is_current(cache.generation):
        # The kept columns live in a reused buffer that a later forward pass overwrote.
        raise ConfigError(f"{_OP} backward: stale cache: another forward pass through the same "
                          "workspace ran after the one this cache came from; call backward "
                          "before the next forward (or give each call its own workspace)")
    filters, per_group, kh, kw = (int(s) for s in weight.shape)
    require_ndim(dy, 4, f"{_OP} backward", "dy", "(N, F, oh, ow)")
    require_shape(dy, (g.n, filters, g.oh, g.ow), f"{_OP} backward", "dy")
    require_same_dtype(f"{_OP} backward", "the forward input", weight, dy=dy)
    xp = array_module(dy)
    dtype = dy.dtype
    w_mat = weight.reshape(filters, per_group * kh * kw)
    w_t = w_mat.T
    # every chunk writes dW in full; an empty batch has no chunk, and its gradient is zero
    dweight = (xp.zeros if g.n == 0 else xp.empty)(weight.shape, dtype=dtype)
    dw_mat = dweight.reshape(filters, per_group * kh * kw)
    dbias = xp.zeros(filters, dtype=dtype) if cache.has_bias else None
    dx = xp.empty((g.n, g.c, g.h, g.w), dtype=dtype) if input_grad else None
    if cache.method == "rows":
        _row_columns_backward(dy, cache, dweight, dbias, dx)
        return dx, dweight, dbias
    w_fold = conv_rows.fold_weight(xp, weight, groups) if input_grad and _use_row_fold(g) else None
    if cache.cols is not None and g.n > 0:
        _backward_parts(dy, cache, w_t, w_fold, dw_mat, dbias, dx,
                        *_plan_parts(g, xp, dy.dtype.itemsize))
        return dx, dweight, dbias
    for n0 in range(0, g.n, cache.chunk):
        n1 = min(g.n, n0 + cache.chunk)
        m = n1 - n0
        # dY of the chunk in GEMM layout (F, n*L); wide garbage columns must be zero so that
        # they add nothing to dW and produce zero column gradients.
        dy_mat = ws.get("dy_mat", (filters, m * g.length), dtype, xp)
        gather_dy(xp, dy, n0, n1, dy_mat, g, zero_garbage=True)
        if dbias is not None:
            dbias += dy_mat.sum(axis=1)
        cols = ws.get("cols", (g.rows, m * g.length), dtype, xp)
        _im2col_chunk(padded_chunk(cache.x, n0, n1, g, ws), cols, g)
        if n0 == 0:
            _grouped_dw(xp, dy_mat, cols, dw_mat, groups)
        else:  # later chunks add their share (a GEMM cannot accumulate through NumPy)
            part = ws.get("dw_part", dw_mat.shape, dtype, xp)
            _grouped_dw(xp, dy_mat, cols, part, groups)
            dw_mat += part
        if dx is None:
            continue
        if w_fold is not None:
            _row_fold_dx(xp, dy_mat, w_fold, dx, n0, g, ws, groups)
            continue
        # The recomputed columns are dead after dW: their buffer takes the column gradients.
        _grouped_dcols(xp, w_t, dy_mat, cols, groups)
        _col2im_chunk(cols, dx, n0, g, ws)
    return dx, dweight, dbias


def _dy_part(xp: Any, dy: Any, a: int, b: int, g: ConvGeometry, ws: Workspace,
             suffix: str) -> Any:
    """Samples ``a:b`` of ``dy`` in GEMM layout ``(F, (b-a)*L)``, in a marked workspace buffer
    whose wide garbage columns stay zero between calls (only valid ones are written)."""
    dy_part, fresh = ws.get_marked(f"dy_mat{suffix}", (g.filters, (b - a) * g.length),
                                   dy.dtype, xp, ("dy_mat", g, b - a))
    gather_dy(xp, dy, a, b, dy_part, g, zero_garbage=fresh)
    return dy_part


def _backward_parts(dy: Any, cache: ConvCache, w_t: Any, w_fold: Any, dw_mat: Any, dbias: Any,
                    dx: Any, parts: int, alone: bool = False) -> None:
    """Whole-batch backward with kept columns, split into batch parts like the forward pass
    (one per thread): each part gathers its ``dY`` columns, computes its share of ``dW`` /
    ``db`` and its samples of ``dx`` (by the row fold when ``w_fold`` is given, else column
    gradients + col2im); the shares are summed at the end."""
    g, ws, groups = cache.geometry, cache.workspace, cache.groups
    xp = array_module(dy)
    dtype, filters, L = dy.dtype, g.filters, g.length
    ranges = _part_ranges(0, g.n, parts, g, groups)
    cols = cache.cols
    p = len(ranges)
    dw_parts = ws.get("dw_parts", (p - 1,) + dw_mat.shape, dtype, xp) if p > 1 else None
    db_parts = (ws.get("db_parts", (p, filters), dtype, xp) if dbias is not None else None)

    per_sample = _per_sample_gemms(g, groups, xp)

    def part(k: int, a: int, b: int) -> None:
        m = b - a
        if per_sample:
            _per_sample_backward(xp, dy, a, b, cols, w_t, dw_mat if k == 0 else dw_parts[k - 1],
                                 None if db_parts is None else db_parts[k], dx, g, ws, str(k))
            return
        dy_part = _dy_part(xp, dy, a, b, g, ws, str(k))
        c_part = cols_view(cols, a, b, L)
        if db_parts is not None:
            xp.sum(dy_part, axis=1, out=db_parts[k])
        _grouped_dw(xp, dy_part, c_part, dw_mat if k == 0 else dw_parts[k - 1], groups)
        if dx is None:
            return
        if w_fold is not None:
            _row_fold_dx(xp, dy_part, w_fold, dx, a, g, ws, groups, str(k))
            return
        dc_part = ws.get(f"dcols{k}", (g.rows, m * L), dtype, xp)
        _grouped_dcols(xp, w_t, dy_part, dc_part, groups)
        _col2im_chunk(dc_part, dx, a, g, ws, f"dx_padded{k}")

    (run_alone if alone else run_parts)(part, ranges)
    if dw_parts is not None:
        for k in range(p - 1):
            dw_mat += dw_parts[k]
    if db_parts is not None:
        xp.sum(db_parts, axis=0, out=dbias)


def _per_sample_backward(xp: Any, dy: Any, a: int, b: int, cols: Any, w_t: Any, dw_out: Any,
                         db_out: Any, dx: Any, g: ConvGeometry, ws: Workspace,
                         suffix: str) -> None:
    """Backward of samples ``a:b`` by per-sample GEMMs on ``dy`` as given (narrow columns, no
    groups): ``dW`` is the sum over samples of ``dY_s (F, L) @ cols_s.T``, the column
    gradients ``W.T @ dY_s`` land directly in the batch layout that col2im reads."""
    m, L = b - a, g.length
    dy3 = dy[a:b].reshape(m, g.filters, L)
    c3 = _per_sample_view(xp, cols, m, L, a * L)
    if db_out is not None:
        xp.sum(dy3, axis=(0, 2), out=db_out)
    dw_each = ws.get(f"dw_each{suffix}", (m, g.filters, g.rows), dy.dtype, xp)
    xp.matmul(dy3, c3.transpose(0, 2, 1), out=dw_each)
    xp.sum(dw_each, axis=0, out=dw_out)
    if dx is None:
        return
    dc_part = ws.get(f"dcols{suffix}", (g.rows, m * L), dy.dtype, xp)
    xp.matmul(w_t, dy3, out=_per_sample_view(xp, dc_part, m, L))
    _col2im_chunk(dc_part, dx, a, g, ws, f"dx_padded{suffix}")


def _grouped_dw(xp: Any, dy_mat: Any, cols: Any, out: Any, groups: int) -> None:
    """``out[group] = dY[group] @ cols[group].T`` per group (out rows: filters)."""
    fo, rows = dy_mat.shape[0] // groups, cols.shape[0] // groups
    for k in range(groups):
        xp.matmul(dy_mat[k * fo:(k + 1) * fo], cols[k * rows:(k + 1) * rows].T,
                  out=out[k * fo:(k + 1) * fo])


def _grouped_dcols(xp: Any, w_t: Any, dy_mat: Any, out: Any, groups: int) -> None:
    """``out[group rows] = W[group].T @ dY[group]``; ``w_t`` is ``W_mat.T (rows/g, F)``."""
    if groups == 1:
        xp.matmul(w_t, dy_mat, out=out)
        return
    fo, rows = dy_mat.shape[0] // groups, out.shape[0] // groups
    for k in range(groups):
        xp.matmul(w_t[:, k * fo:(k + 1) * fo], dy_mat[k * fo:(k + 1) * fo],
                  out=out[k * rows:(k + 1) * rows])
