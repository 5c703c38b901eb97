"""Every route decision of the speed paths, made in one place: :class:`Routes` holds the knobs
and thresholds of all of them; for a convolution :func:`plan_conv` returns a :class:`ConvPlan`
that :mod:`convtrain.ops.fast.conv` only follows (the ReLU and dense paths read their
thresholds from :func:`current_routes`).

The rules compare memory traffic and work sizes; the measurements behind each threshold are
in benchmarks/RESULTS.md, "Why the fast paths are what they are". Tests (and anyone curious)
force a route with :func:`force_routes` or by passing a :class:`Routes` to the entry point
instead of the defaults.
"""
from __future__ import annotations

import contextvars
import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np  # only to tell NumPy arrays from CuPy ones (`xp is np`)

from convtrain.errors import InternalError
from convtrain.ops.fast.layout import ConvGeometry
from convtrain.runtime.threads import can_run_parts, get_num_threads, split_ranges
from convtrain.runtime.workspace import get_max_workspace_mb


@dataclasses.dataclass(frozen=True)
class Routes:
    """The knobs of the planner: "auto" lets the rules decide, anything else forces a route."""

    #: "auto", "reference" (:mod:`convtrain.ops.conv`), "im2col" or "rows" (kernel-row
    #: columns; stride 1 with wide columns and no groups only, else im2col runs)
    columns: str = "auto"
    #: wide (flat-shift) columns for stride 1: "auto", "always" (every stride-1 layer) or "never"
    wide: str = "auto"
    #: stride-1 input gradient: "auto", "row_fold" or "col2im" (the row fold needs wide columns)
    input_grad: str = "auto"
    #: one GEMM per sample for narrow, ungrouped columns with fewer rows than output pixels
    per_sample: bool = True
    #: run whole batches as parts on the engine's threads (each with a one-thread BLAS)
    parts: bool = True
    #: below this many bytes of im2col columns a part, run on the calling thread alone
    min_part_column_bytes: int = 1 << 20
    #: seconds of work the calling thread's part gets beyond an equal share (0: none)
    head_start_s: float = 70e-6
    #: the work rate that turns a sample's GEMM FLOPs into seconds for the head start
    assumed_flops_per_s: float = 40e9
    #: give single-channel layers (a model's first, whose dx is skipped) narrow columns
    narrow_single_channel: bool = True
    #: scratch bytes per chunk for cache blocking; None: one chunk whenever the limit allows
    target_chunk_bytes: int | None = None
    # --- the other operations' speed paths (ops/fast/activations.py, dense.py, batchnorm.py) ---
    #: ReLUs on fewer input bytes run on the calling thread (a thread hand-off costs more)
    relu_min_parallel_bytes: int = 8 << 20
    #: dense GEMMs under this many multiply-adds run on one BLAS thread (a multi-threaded
    #: GEMM leaves OpenBLAS's worker busy-waiting on the core the conv threads need next)
    dense_single_thread_macs: int = 1 << 24
    #: batch norms on fewer input bytes run on the calling thread (ops/fast/batchnorm.py; the
    #: ReLU's measured hand-off cost, each batch-norm hand-off carrying 2-4 passes)
    batchnorm_min_parallel_bytes: int = 8 << 20

    def __post_init__(self) -> None:
        if self.columns == "rows" and self.input_grad == "col2im":
            raise InternalError("Routes: kernel-row columns compute dx by the row fold; "
                                "columns='rows' and input_grad='col2im' contradict each other")
        for name, allowed in (("columns", ("auto", "reference", "im2col", "rows")),
                              ("wide", ("auto", "always", "never")),
                              ("input_grad", ("auto", "row_fold", "col2im"))):
            if getattr(self, name) not in allowed:
                raise InternalError(f"Routes.{name} must be one of {allowed}, got "
                                    f"{getattr(self, name)!r}")


_ROUTES: contextvars.ContextVar[Routes] = contextvars.ContextVar("conv_routes",
                                                                     default=Routes())


@contextmanager
def force_routes(**changes: Any) -> Iterator[Routes]:
    """Plan every convolution in the block with these :class:`Routes` fields changed, e.g.
    ``with force_routes(columns="rows", min_part_column_bytes=0): ...``."""
    routes = dataclasses.replace(_ROUTES.get(), **changes)
    token = _ROUTES.set(routes)
    try:
        yield routes
    finally:
        _ROUTES.reset(token)


def current_routes() -> Routes:
    """The routes in force (the defaults outside :func:`force_routes`)."""
    return _ROUTES.get()


@dataclasses.dataclass(frozen=True)
class ConvPlan:
    """How one convolution call runs (the backward pass follows the forward pass's plan)."""

    route: str  # "reference", "im2col" or "rows"
    geometry: ConvGeometry
    groups: int
    chunk: int  # samples per chunk under the workspace limit (>= N: one chunk, columns kept)
    parts: int  # batch parts side by side on the engine's threads (1: one piece)
    alone: bool  # the one part runs on the calling thread only (one-thread BLAS, no splits)
    per_sample: bool  # one GEMM per sample (im2col, narrow columns)
    row_fold: bool  # input gradient by the row fold instead of column gradients + col2im
    head_start: int  # samples the calling thread's part gets beyond an equal share

    @property
    def keeps_columns(self) -> bool:
        """One chunk: the forward pass's columns are kept for the backward pass."""
        return self.chunk >= self.geometry.n

    def ranges(self, n0: int, n1: int) -> list[tuple[int, int]]:
        """Samples ``n0:n1`` cut into ``parts`` ranges, the first (the calling thread's) longer
        by the head start (at most 1/8 of another part), the others shorter by as many. The
        cut depends on shapes only, so forward and backward, with or without ``dx``, split the
        batch alike and the summed ``dW`` shares stay bitwise reproducible."""
        ranges = [(n0 + a, n0 + b) for a, b in split_ranges(n1 - n0, self.parts)]
        if len(ranges) < 2:
            return ranges
        sizes = [b - a for a, b in ranges]
        extra = min(self.head_start, min(sizes[1:]) // 8)
        sizes[0] += extra
        for i in range(extra):
            sizes[1 + i % (len(sizes) - 1)] -= 1
        bounds = [n0]
        for size in sizes:
            bounds.append(bounds[-1] + size)
        return list(zip(bounds[:-1], bounds[1:]))


def plan_conv(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int], out_hw: tuple[int, int],
              groups: int, xp: Any, itemsize: int, max_workspace_mb: float | None,
              routes: Routes | None = None) -> ConvPlan:
    """Decide how a convolution with these (checked) sizes runs on ``xp``'s arrays.

    Any array module other than NumPy (CuPy) takes the reference route: the speed paths are
    tuned for a CPU's caches and threads, and the GPU runs im2col + cuBLAS as written."""
    routes = current_routes() if routes is None else routes
    n, c, h, w = (int(s) for s in x_shape)
    filters, _, kh, kw = (int(s) for s in weight_shape)
    (sh, sw), (ph, pw), (dh, dw), (oh, ow) = stride, padding, dilation, out_hw
    wp = w + 2 * pw
    reference = xp is not np or routes.columns == "reference"
    wide = not reference and _use_wide_columns(sh, sw, oh, ow, wp, filters, c, routes)
    g = ConvGeometry(n, c, h, w, filters, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, wide,
                     (oh - 1) * wp + ow if wide else oh * ow)
    limit_mb = get_max_workspace_mb() if max_workspace_mb is None else max_workspace_mb
    if reference:  # im2col columns and their gradient: the workspace limit chunks it too
        chunk = _chunk_size(g, itemsize, limit_mb, False, False, routes.target_chunk_bytes)
        return ConvPlan("reference", g, groups, chunk, 1, False, False, False, 0)
    rows = _use_row_columns(g, groups, routes)
    row_fold = rows or _use_row_fold(g, routes)  # kernel-row columns always fold dx by rows
    chunk = _chunk_size(g, itemsize, limit_mb, rows, row_fold, routes.target_chunk_bytes)
    parts, alone = _plan_parts(g, xp, itemsize, min(chunk, n), routes)
    per_sample = (routes.per_sample and not rows and not g.wide and groups == 1
                  and g.rows < g.oh * g.ow)
    if not rows and chunk < n:
        # im2col over the workspace limit: one piece a chunk (copies split between threads,
        # the BLAS's own threads), batch GEMMs
        parts, alone, per_sample = 1, False, False
    return ConvPlan("rows" if rows else "im2col", g, groups, chunk, parts, alone, per_sample,
                    row_fold, _head_start(g, groups, routes))


def _use_wide_columns(sh: int, sw: int, oh: int, ow: int, wp: int, filters: int,
                      channels: int, routes: Routes) -> bool:
    """Wide columns (stride 1: one column per flat position ``y*Wp + x``, so every im2col row
    is one contiguous run) make the copies 2-2.5x faster but every GEMM
    ``((oh-1)*Wp + ow) / (oh*ow)`` times longer; the GEMM cost grows with ``filters``, the
    copy saving does not: wide while (extra fraction x filters) < 8. A single input channel
    (a model's first layer, whose dx training skips) stays narrow: shorter GEMMs, whole-row
    output copies."""
    if sh != 1 or sw != 1 or routes.wide == "never":
        return False
    if routes.wide == "always":
        return True
    if channels == 1 and routes.narrow_single_channel:
        return False
    extra = ((oh - 1) * wp + ow) / (oh * ow) - 1
    return extra * filters < 8


def _use_row_columns(g: ConvGeometry, groups: int, routes: Routes) -> bool:
    """Kernel-row columns (:mod:`convtrain.ops.fast.conv_rows`) for stride 1 with wide columns
    and no groups, when they move under 3/4 of im2col's memory traffic (in column rows a
    sample: im2col's ``C*kh*kw`` rows are written and read by two GEMMs, 3x; kernel-row
    columns are ``C*kh`` rows, 3x, plus the forward GEMM's ``F*kw`` rows written and read)."""
    if not g.wide or groups != 1 or routes.columns == "im2col" or routes.input_grad == "col2im":
        return False  # (kernel-row columns fold dx by rows: forcing col2im rules them out)
    if routes.columns == "rows":
        return True
    return 4 * (3 * g.c * g.kh + 2 * g.filters * g.kw) < 3 * (3 * g.rows)


def _use_row_fold(g: ConvGeometry, routes: Routes) -> bool:
    """The row fold for ``dx`` (wide columns only) when it moves under 3/4 of col2im's memory
    traffic: it copies ``F*kw`` shifted rows of ``dY`` and folds ``C*kh`` rows with ``kh``
    adds, where col2im writes ``C*kh*kw`` column-gradient rows and folds them with
    ``kh*kw`` read-modify-write adds; the GEMM FLOPs are the same."""
    if not g.wide or routes.input_grad == "col2im":
        return False
    if routes.input_grad == "row_fold":
        return True
    return 4 * (2 * g.filters * g.kw + 3 * g.c * g.kh) < 3 * (3 * g.c * g.kh * g.kw)


def _chunk_size(g: ConvGeometry, itemsize: int, limit_mb: float | None, row_columns: bool,
                row_fold: bool, target_chunk_bytes: int | None) -> int:
    """Samples per chunk: as many as fit the workspace limit (and the cache target, when one is
    set); at least one (a single sample larger than the limit still runs, one at a time)."""
    # Scratch per sample: columns, Y and dY in GEMM layout, the padded input and the padded dx
    # accumulator; keeping the columns for the backward pass (one chunk) adds their gradient
    # buffer, while recomputing them lets the gradient reuse the column buffer.
    common = 2 * g.filters * g.length + 2 * g.c * g.hp * g.wp
    if row_columns:
        # kernel-row columns (+ ones), the F*kw-row GEMM result, the folded output, shifted
        # dY and the dx rows, plus dY in GEMM layout: the same whether kept or recomputed
        rows = (2 * g.c * g.kh + 1 + 2 * g.filters * g.kw + g.filters) * g.row_length
        per_sample_kept = per_sample_chunked = itemsize * (
            rows + g.filters * g.length + 2 * g.c * g.hp * g.wp)
    elif row_fold:  # shifted dY rows and folded rows instead of the column gradient
        dx_rows = (g.filters * g.kw + g.c * g.kh) * g.row_length
        per_sample_kept = per_sample_chunked = itemsize * (g.rows * g.length + dx_rows + common)
    else:
        per_sample_kept = itemsize * (2 * g.rows * g.length + common)
        per_sample_chunked = itemsize * (g.rows * g.length + common)
    budgets = [b for b in (target_chunk_bytes,) if b is not None]
    if limit_mb is not None:
        budgets.append(limit_mb * 2**20)
    if not budgets or g.n * per_sample_kept <= min(budgets):
        return max(1, g.n)  # an empty batch still needs a non-zero loop step
    return max(1, min(g.n - 1, int(min(budgets) // per_sample_chunked)))


def _plan_parts(g: ConvGeometry, xp: Any, itemsize: int, n: int,
                routes: Routes) -> tuple[int, bool]:
    """``(parts, alone)`` for ``n`` samples (a full chunk: a shorter last chunk is cut alike, so
    no part's buffers outgrow a full chunk's). One part per engine thread when the BLAS can
    be set to one thread; under ``min_part_column_bytes`` of im2col columns a part (the
    layer's size, whichever columns run) the calling thread runs alone, since a thread
    wake-up and the shared memory bus cost more than the second thread saves."""
    parts = 1
    if routes.parts and xp is np and n >= 2 and can_run_parts():
        parts = min(get_num_threads(), n)
    per_part = -(-n // parts) if parts > 1 else n
    if parts > 1 and g.rows * g.length * per_part * itemsize < routes.min_part_column_bytes:
        return 1, True
    return parts, False


def _head_start(g: ConvGeometry, groups: int, routes: Routes) -> int:
    """Samples of work in ``head_start_s`` (about one thread wake-up): the calling thread
    starts its part at once, the worker only after waking, so this evens their ends. A
    sample's work is 1.5 forward GEMMs (the mean of a forward and a backward pass)."""
    if routes.head_start_s <= 0:
        return 0
    flops = 1.5 * 2.0 * g.filters * (g.c // groups) * g.kh * g.kw * g.length
    return int(routes.head_start_s * routes.assumed_flops_per_s / max(flops, 1.0) + 0.5)
