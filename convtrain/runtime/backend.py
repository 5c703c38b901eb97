"""Array backend: one place that decides whether arrays live in NumPy (CPU) or CuPy (GPU).

Engine functions never import NumPy for array math; they ask for the module that owns their
inputs with :func:`array_module` so that the same code runs on both backends.
"""
from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Any

import numpy as np

from convtrain.errors import ConfigError

KNOWN_BACKENDS = ("numpy", "cupy")


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Cheap enough for hot paths: it only looks at the type's module name, so CuPy is never
    imported on a CPU-only machine.
    """
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy  # noqa: PLC0415 - only reached when a CuPy array exists

            return cupy
    return np


def to_host(x: Any) -> np.ndarray:
    """``x`` as a host NumPy array: a device array is copied with ``.get()`` (CuPy refuses
    ``np.asarray`` on it); NumPy arrays, lists and scalars go through ``np.asarray``."""
    if array_module(x) is not np:
        return x.get()
    return np.asarray(x)


@dataclasses.dataclass(frozen=True)
class Backend:
    """The array library of a run.

    Attributes:
        name: ``"numpy"`` or ``"cupy"``.
        xp: the array module itself (``numpy`` or ``cupy``).
    """

    name: str
    xp: ModuleType

    def asarray(self, x: Any, dtype: Any = None):
        """Move ``x`` (NumPy array, list, scalar or device array) onto this backend."""
        if self.xp is np:
            return np.asarray(to_host(x), dtype=dtype)
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        """Return ``x`` as a host NumPy array (a no-op for NumPy arrays), whichever backend
        holds it."""
        return to_host(x)

    def synchronize(self) -> None:
        """Block until queued device work is done (needed before timing GPU code)."""
        if self.name == "cupy":
            self.xp.cuda.Device().synchronize()

    def rng(self, seed: int | None):
        """A seeded random generator living on this backend.

        On CuPy its state lives in device memory and cannot be saved (``bit_generator.state``
        is a method returning a pointer there); code whose random stream must survive a
        checkpoint keeps a host NumPy Generator and seeds device generators from it.
        """
        return self.xp.random.default_rng(seed)


def get_backend(name: str = "numpy") -> Backend:
    """Return the backend called ``name``.

    Raises:
        ConfigError: for an unknown name, or ``"cupy"`` when CuPy or a GPU is missing.
    """
    if name == "numpy":
        return Backend("numpy", np)
    if name == "cupy":
        try:
            import cupy  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                "backend.name=cupy needs the cupy package (pip install cupy-cuda12x) and an NVIDIA "
                f"GPU; importing it failed: {exc}"
            ) from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # CUDA driver errors have many types
            raise ConfigError(f"backend 'cupy' found no usable CUDA device: {exc}") from None
        if count < 1:
            raise ConfigError("backend 'cupy' found no CUDA device")
        return Backend("cupy", cupy)
    raise ConfigError(f"backend.name: unknown backend '{name}' (known backends: {', '.join(KNOWN_BACKENDS)})")


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one GPU (used by tests to skip)."""
    try:
        get_backend("cupy")
    except ConfigError:
        return False
    return True
