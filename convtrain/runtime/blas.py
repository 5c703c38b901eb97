"""BLAS thread control: how many threads the BLAS behind NumPy's GEMMs may use (no math).

OpenBLAS's own ``openblas_set_num_threads`` is called through ctypes where its symbols are
found (a direct call, ~0.3 us), threadpoolctl's controller otherwise; without threadpoolctl the
BLAS cannot be controlled and :func:`blas_controllable` is False.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_blas_libs: list[_BlasThreads] | None = None  # thread-count handles of the loaded BLAS libraries


class _BlasThreads:
    """Get / set one BLAS library's thread count: OpenBLAS's own C functions when its
    threading layer is its pthreads pool (a direct ctypes call, ~0.3 us), threadpoolctl's
    controller otherwise (~3-8 us a call: it looks the symbols up and checks the calling
    thread every time, and a parallel section makes three such calls)."""

    def __init__(self, controller: Any) -> None:
        self.get: Callable[[], int] = controller.get_num_threads
        self.set: Callable[[int], Any] = controller.set_num_threads
        if (getattr(controller, "internal_api", None) != "openblas"
                or getattr(controller, "threading_layer", None) == "openmp"):
            return
        dynlib = getattr(controller, "dynlib", None)
        for prefix in ("", "scipy_"):
            for suffix in ("", "64_", "_64"):
                getter = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
                setter = getattr(dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    getter.restype, getter.argtypes = ctypes.c_int, []
                    setter.restype, setter.argtypes = None, [ctypes.c_int]
                    self.get, self.set = getter, setter
                    return


def _blas_controllers() -> list[_BlasThreads]:
    """The BLAS libraries NumPy uses, as thread-count handles ([] without threadpoolctl)."""
    global _blas_libs
    if _blas_libs is None:
        try:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415
            _blas_libs = [_BlasThreads(lib) for lib in ThreadpoolController().lib_controllers
                          if lib.user_api == "blas"]
        except Exception:  # noqa: BLE001 - not installed, or an unknown BLAS: no control
            _blas_libs = []
    return _blas_libs


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run the BLAS on the calling thread only (no OpenBLAS worker is woken) inside the block.

    Why: after every multi-threaded GEMM OpenBLAS's worker busy-waits ~0.1 s on the second
    core; GEMMs of a small network (LeNet-5) are too small to gain from it, and concurrent
    GEMMs from the engine's own threads (:func:`run_parts`) must not share the BLAS pool.
    Costs ~1-2 us with OpenBLAS's own pool (three ctypes calls). Nested blocks are fine
    (each restores what it found).
    """
    libs = _blas_controllers()
    saved = [lib.get() for lib in libs]
    try:
        for lib, count in zip(libs, saved):
            if count != 1:
                lib.set(1)
        yield
    finally:
        for lib, count in zip(libs, saved):
            if count != 1:
                lib.set(count)


def blas_controllable() -> bool:
    """True when the BLAS thread count can be set (threadpoolctl found a BLAS)."""
    return bool(_blas_controllers())
