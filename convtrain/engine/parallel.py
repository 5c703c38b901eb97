"""A tiny persistent thread pool that splits large NumPy copies and elementwise work.

Why: OpenBLAS already runs the GEMMs on every core, but everything else in a convolution
(im2col copies, col2im slice-adds, layout transposes, pooling) is single-threaded NumPy. NumPy
releases the GIL inside its copy and ufunc loops, so splitting such an operation along an axis
and running the halves on two threads uses the second core (measured here: ~1.8x on
cache-resident im2col/col2im; nothing on DRAM-bound copies, which is why the convolution also
works in cache-sized chunks).

Only NumPy arrays are ever split: CuPy work is already parallel on the device, so callers run it
as one piece (see :func:`run_split`'s ``xp`` argument).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np

from convtrain.errors import ConfigError

#: Work below this many bytes touched is run on the calling thread: a task hand-off costs
#: ~20-50 us, more than a small copy itself.
MIN_PARALLEL_BYTES = 256 * 1024

_lock = threading.Lock()
_num_threads = max(1, min(2, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None


def get_num_threads() -> int:
    """Threads the engine uses for copies and elementwise work (the caller's thread included)."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set how many threads split the engine's copies / elementwise work (1 disables it).

    Does not change the BLAS thread count (use threadpoolctl or OPENBLAS_NUM_THREADS for that).
    """
    global _num_threads, _pool
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"engine num_threads must be a positive int, got {n!r}")
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
            _pool = None
        _num_threads = n


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # Workers sleep on a queue between tasks (no spinning), so an idle pool costs nothing.
            _pool = ThreadPoolExecutor(max_workers=_num_threads - 1,
                                       thread_name_prefix="convtrain-engine")
        return _pool


def split_ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``range(n)`` cut into at most ``parts`` near-equal pieces."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts) if bounds[k] < bounds[k + 1]]


def run_split(fn: Callable[[int, int], Any], n: int, nbytes: int, xp: Any = np) -> None:
    """Call ``fn(start, stop)`` over pieces of ``range(n)``, in parallel when worth it.

    ``fn`` must write disjoint outputs for disjoint ranges. ``nbytes`` is the memory the whole
    operation touches; small work (or non-NumPy arrays, or one thread) runs as ``fn(0, n)``.
    """
    threads = _num_threads
    if threads == 1 or n < 2 or nbytes < MIN_PARALLEL_BYTES or xp is not np:
        fn(0, n)
        return
    ranges = split_ranges(n, threads)
    pool = _executor()
    futures = [pool.submit(fn, lo, hi) for lo, hi in ranges[1:]]
    try:
        fn(*ranges[0])  # the calling thread takes the first piece itself
    finally:
        for future in futures:
            future.result()  # re-raises a worker's exception here
