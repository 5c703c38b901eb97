"""The engine's worker threads: a tiny persistent pool that runs batch parts and splits large
NumPy copies and elementwise work (CPU pinning and a fork handler included; no math).

Why: OpenBLAS already runs the GEMMs on every core, but everything else in a convolution
(im2col copies, col2im slice-adds, layout transposes, pooling) is single-threaded NumPy. NumPy
releases the GIL inside its copy and ufunc loops, so splitting such an operation along an axis
and running the halves on two threads uses the second core (measured here: ~1.8x on
cache-resident im2col/col2im; nothing on DRAM-bound copies, which is why the convolution also
works in cache-sized chunks).

:func:`run_parts` runs whole pipelines (a convolution's batch parts, GEMMs included) one per
thread, with the BLAS set to one thread (:func:`convtrain.runtime.blas.blas_single_thread`);
inside a part, :func:`run_split` runs inline. The workers are plain threads
handed one task at a time (:class:`_Worker`); one parallel section uses them at a time, and a
forked child starts its own.

Only NumPy arrays are ever split: CuPy work is already parallel on the device, so callers run it
as one piece (see :func:`run_split`'s ``xp`` argument).
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from convtrain.errors import ConfigError
from convtrain.runtime.blas import blas_controllable, blas_single_thread

#: Work below this many bytes touched is run on the calling thread: a thread wake-up costs
#: ~50 us on the 2-vCPU machine measured, and two threads share one memory bus. Max-pool 2x2
#: on (N, C, H, W) float32, split / inline, ms (the pool counts input + output bytes, 1.25x
#: the input): 1.0 MB input fwd 0.29 / 0.24, bwd 0.50 / 0.46; 1.15 MB 0.36 / 0.22,
#: 0.59 / 0.44; 2.0 MB 0.39 / 0.43, 0.71 / 0.87; 2.3 MB 0.37 / 0.40, 0.69 / 0.83.
#: (It was 256 KiB, from measurements before the batch-part convolutions.)
MIN_PARALLEL_BYTES = 2 * 2**20

_lock = threading.Lock()
_num_threads = max(1, min(2, os.cpu_count() or 1))
_pool: list[_Worker] | None = None  # the engine's worker threads (the caller is thread 0)
#: Held by the thread running a parallel section: the workers serve one section at a time,
#: and a section started meanwhile from another thread runs inline instead.
_section = threading.Lock()
#: ``nested`` is True on a thread running one part of :func:`run_parts`: work it splits with
#: :func:`run_split` then runs inline (the pool's workers are busy with the other parts).
_local = threading.local()


def get_num_threads() -> int:
    """Threads the engine uses for copies and elementwise work (the caller's thread included)."""
    return _num_threads


def set_num_threads(n: int) -> None:
    """Set how many threads split the engine's copies / elementwise work (1 disables it).

    Does not change the BLAS thread count (use threadpoolctl or OPENBLAS_NUM_THREADS for that).
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"engine num_threads must be a positive int, got {n!r}")
    with _lock:
        old = _take_pool()
        _num_threads = n
    _stop(old)


def _take_pool() -> list[_Worker] | None:
    """Detach the pool (caller holds ``_lock``): the next parallel section starts a new one with
    the current settings. Stop the returned workers with :func:`_stop` after releasing
    ``_lock`` (a section holds ``_section`` and then takes ``_lock``: never the reverse)."""
    global _pool
    old, _pool = _pool, None
    return old


def _stop(workers: list[_Worker] | None) -> None:
    """Stop detached workers, waiting for a section that still uses them to end first."""
    if workers:
        with _section:
            for worker in workers:
                worker.stop()


#: Pin the engine's threads to CPUs when the process may run on exactly ``num_threads`` CPUs
#: (:func:`set_pin_threads`). Measured (2-CPU VM, conv (b) fwd+bwd after 0.15 s idle): unpinned,
#: the worker and the calling thread shared one CPU for the first ~7 calls (~45 ms: the kernel
#: wakes a thread next to its waker and only the load balancer separates them later), 5-8 ms a
#: call instead of ~3.5; pinned, from the second call on.
_pin_threads = True
#: ``(caller_cpus, [cpu of worker 0, ...])`` while pinning applies, else None.
_pinning: tuple[set[int], list[int]] | None = None


def set_pin_threads(pin: bool) -> None:
    """Whether the engine pins its threads to CPUs (see :data:`_pin_threads`). Pinning only ever
    applies when the process may run on exactly as many CPUs as the engine has threads (a
    2-core machine, ``taskset``, a Slurm CPU allocation): with more CPUs than threads the
    choice of CPUs is left to the kernel (processes sharing a large machine would otherwise
    all pin to the same ones). The calling thread is only kept off the workers' CPUs inside
    the engine's parallel sections; its affinity is restored when each section ends."""
    global _pin_threads
    if not isinstance(pin, bool):
        raise ConfigError(f"engine pin_threads must be true or false, got {pin!r}")
    with _lock:
        old = _take_pool()
        _pin_threads = pin
    _stop(old)


def get_pin_threads() -> bool:
    """Whether pinning is enabled (it applies only as :func:`set_pin_threads` describes)."""
    return _pin_threads


def _plan_pinning() -> tuple[set[int], list[int]] | None:
    """CPUs for the caller and each worker, or None when pinning does not apply. The allowed
    set is the calling thread's (the process's, unless someone narrowed that thread's own)."""
    if not _pin_threads or _num_threads < 2 or not hasattr(os, "sched_setaffinity"):
        return None
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except OSError:
        return None
    if len(allowed) != _num_threads:
        return None
    return set(allowed[:1]), allowed[1:]


def _pin_worker(index: int) -> None:
    """Pin worker thread ``index`` to its own CPU (best effort; nothing without pinning)."""
    if _pinning is None:
        return
    cpu = _pinning[1][index % len(_pinning[1])]
    try:
        os.sched_setaffinity(0, {cpu})  # 0: the calling thread
    except OSError:
        # The thread was created inside a caller section (caller's CPUs only): never leave it
        # there, or it would share the caller's CPU for good.
        try:
            os.sched_setaffinity(0, _pinning[0] | set(_pinning[1]))
        except OSError:
            pass


@contextmanager
def _caller_off_worker_cpus() -> Iterator[None]:
    """Keep the calling thread off the workers' CPUs for the block (pinning only).

    Costs ~10 us each way (two affinity system calls), and still pays: moving the caller only
    when it was found on a worker's CPU at the start of a section (sched_getcpu) measured
    faster in a tight loop but 1.15-1.2x slower on layer (b) alternated with PyTorch (2.68 /
    2.76 vs 2.20 / 2.35 ms): a caller left unrestricted gets woken onto the worker's CPU
    later in the section.

    A thread started inside the block inherits the restricted affinity for good; the engine's
    own workers re-pin themselves (:func:`_pin_worker`), and nothing else is started from
    inside a parallel section."""
    if _pinning is None:
        yield
        return
    try:
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, _pinning[0])
    except OSError:
        yield
        return
    try:
        yield
    finally:
        try:
            os.sched_setaffinity(0, saved)
        except OSError:
            pass


class _Worker:
    """One engine thread, handed one task at a time through two locks.

    Why not ``concurrent.futures``: on this VM a parallel section's hand-off is on the critical
    path of every convolution; a bare lock release / acquire costs ~3 / ~9 us where
    ``ThreadPoolExecutor.submit`` / ``Future.result`` cost ~12 / ~19 us (0.5 ms idle between
    sections, medians). Between tasks the thread sleeps on a lock (no spinning)."""

    def __init__(self, index: int) -> None:
        self._go = threading.Lock()
        self._go.acquire()
        self._done = threading.Lock()
        self._done.acquire()
        self._task: tuple[Callable[..., Any], tuple[Any, ...]] | None = None
        self._error: BaseException | None = None
        # NumPy's floating-point error settings (np.errstate) are per thread: a task runs
        # under its caller's, set here only when they change (np.seterr costs ~1 us)
        self._fp_errors: dict[str, str] | None = None
        self._task_fp_errors: dict[str, str] = {}
        self._thread = threading.Thread(target=self._loop, args=(index,), daemon=True,
                                        name=f"convtrain-engine-{index}")
        self._thread.start()

    def _loop(self, index: int) -> None:
        _pin_worker(index)
        while True:
            self._go.acquire()
            task = self._task
            if task is None:  # stop()
                self._done.release()
                return
            try:
                if self._task_fp_errors != self._fp_errors:
                    np.seterr(**self._task_fp_errors)
                    self._fp_errors = self._task_fp_errors
                task[0](*task[1])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by join()
                self._error = exc
            self._task = None
            self._done.release()

    def start(self, fn: Callable[..., Any], *args: Any,
              fp_errors: dict[str, str] | None = None) -> None:
        """Run ``fn(*args)`` on this thread under ``fp_errors`` (``np.geterr()`` of the
        caller, taken here when not given); :meth:`join` must follow."""
        self._task_fp_errors = np.geterr() if fp_errors is None else fp_errors
        self._task = (fn, args)
        self._go.release()

    def join(self) -> None:
        """Wait for the task; re-raise its exception here. An exception raised into the
        waiting thread (Ctrl-C) is re-raised only once the task has ended: the task writes
        into the caller's arrays, and the next task must not overwrite this one's slot."""
        interrupted: BaseException | None = None
        while True:
            try:
                self._done.acquire()
                break
            except BaseException as exc:  # noqa: BLE001 - re-raised once the task is done
                interrupted = exc
        error, self._error = self._error, None
        if interrupted is not None:
            raise interrupted
        if error is not None:
            raise error

    def stop(self) -> None:
        self._task = None
        self._go.release()
        self._done.acquire()
        self._thread.join()


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: forget the pool (the next section
    starts new workers) and renew the locks, which another thread may have held at the fork."""
    global _pool, _lock, _section
    _pool = None
    _lock = threading.Lock()
    _section = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _workers() -> list[_Worker]:
    global _pool, _pinning
    with _lock:
        if _pool is None:
            _pinning = _plan_pinning()
            _pool = [_Worker(k) for k in range(_num_threads - 1)]
        return _pool


def _run_on_workers(calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    """Run ``calls[0]`` on the calling thread and ``calls[k]`` on worker ``k - 1`` at once;
    return when all are done, re-raising the first exception (the caller's own first).
    Runs them one after the other on the calling thread when another thread's section holds
    the workers."""
    if _section.acquire(blocking=False):
        try:
            workers = _workers()  # under _section, so no other thread stops them meanwhile
            if len(calls) - 1 <= len(workers):
                with _caller_off_worker_cpus():
                    _start_and_join(workers, calls)
                return
        finally:
            _section.release()
    for fn, args in calls:  # the workers are busy, or there are more pieces than threads
        fn(*args)


def _start_and_join(workers: list[_Worker],
                    calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
    started: list[_Worker] = []
    caller_error: BaseException | None = None
    fp_errors = np.geterr()  # e.g. the trainer's np.errstate: the workers' pieces obey it too
    try:
        for worker, (fn, args) in zip(workers, calls[1:]):
            try:
                worker.start(fn, *args, fp_errors=fp_errors)
            except BaseException:
                # Interrupted inside start(): whether the task was handed over is unknown, so
                # this pool is retired (a fresh one serves the next section) and the worker
                # is left alone rather than joined (a join could wait forever).
                with _lock:
                    if _pool is workers:
                        _take_pool()
                raise
            started.append(worker)
        calls[0][0](*calls[0][1])  # the calling thread takes the first piece itself
    except BaseException as exc:  # noqa: BLE001 - re-raised after the joins
        caller_error = exc
    worker_errors = []
    for worker in started:  # always wait: the workers write into the caller's arrays
        try:
            worker.join()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            worker_errors.append(exc)
    if caller_error is not None:
        raise caller_error
    if worker_errors:
        raise worker_errors[0]


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
    if (threads == 1 or n < 2 or nbytes < MIN_PARALLEL_BYTES or xp is not np
            or getattr(_local, "nested", False)):
        fn(0, n)
        return
    _run_on_workers([(fn, (lo, hi)) for lo, hi in split_ranges(n, threads)])


def can_run_parts() -> bool:
    """True when :func:`run_parts` can run GEMMs on several threads at once: more than one
    engine thread and a BLAS whose thread count we can set to 1 (threadpoolctl)."""
    return _num_threads > 1 and blas_controllable()


def _run_nested(fn: Callable[..., Any], *args: Any) -> None:
    previous = getattr(_local, "nested", False)
    _local.nested = True
    try:
        fn(*args)
    finally:
        _local.nested = previous


def run_alone(fn: Callable[[int, int, int], Any], ranges: Sequence[tuple[int, int]]) -> None:
    """Call ``fn(k, start, stop)`` for each range on the calling thread only: the BLAS
    single-threaded and :func:`run_split` inline (work too small to be worth a second thread,
    whose wake-up and memory traffic would cost more than it saves)."""
    with blas_single_thread():
        for k, (lo, hi) in enumerate(ranges):
            _run_nested(fn, k, lo, hi)


def run_parts(fn: Callable[[int, int, int], Any], ranges: Sequence[tuple[int, int]]) -> None:
    """Call ``fn(k, start, stop)`` for each ``ranges[k]``, one part per engine thread, with
    the BLAS single-threaded (each part runs its own GEMMs) and :func:`run_split` inline
    inside the parts. Parts must write disjoint outputs. One part runs as a plain call."""
    if len(ranges) <= 1 or _num_threads == 1 or getattr(_local, "nested", False):
        for k, (lo, hi) in enumerate(ranges):
            fn(k, lo, hi)
        return
    with blas_single_thread():
        _run_on_workers([(_run_nested, (fn, k, lo, hi)) for k, (lo, hi) in enumerate(ranges)])
