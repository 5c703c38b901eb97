"""A strict, CPU-only stand-in for CuPy, for tests (never shipped with convtrain).

CI has no GPU, so the CuPy backend would otherwise never run. :func:`install` puts a module
named ``cupy`` into ``sys.modules`` whose arrays are NOT NumPy arrays and which refuses what
CuPy refuses: implicit conversion to NumPy, host arrays mixed into device arithmetic, NumPy-only
functions and parameters, NumPy's ``bit_generator.state`` idiom. Tests use the
``strict_cupy`` fixture (``tests/strict_cupy/fixture.py``); see ``_device.py`` for the list of
known differences from real CuPy.
"""
from __future__ import annotations

import sys
import types

from tests.strict_cupy import _cuda, _device, _functions, _random

__all__ = ["IMPLICIT_CONVERSION", "build_modules", "install", "uninstall"]

IMPLICIT_CONVERSION = _device.IMPLICIT_CONVERSION

_MODULE_NAMES = ("cupy", "cupy.random", "cupy.cuda", "cupy.cuda.runtime", "cupy.lib",
                 "cupy.lib.stride_tricks")


def build_modules(device_count: int = 1) -> dict[str, types.ModuleType]:
    """Fresh ``cupy`` module objects (by ``sys.modules`` name); only CuPy's public names."""
    import numpy as np  # noqa: PLC0415

    cupy = types.ModuleType("cupy", "Strict CPU stand-in for CuPy (tests only).")
    cupy.__version__ = "13.0.0+strict.standin"
    cupy.ndarray = _device.ndarray
    _device.ndarray.__module__ = "cupy"
    _device.ufunc.__module__ = "cupy"
    for name, uf in _device.UFUNCS.items():
        setattr(cupy, name, uf)
    for name, func in _functions.FUNCTIONS.items():
        setattr(cupy, name, func)
    for name in _functions.DTYPE_NAMES:
        setattr(cupy, name, getattr(np, name) if name != "bool_" else np.bool_)
    cupy.random = _random.make_random_module()
    cupy.cuda = _cuda.make_cuda_module(device_count)
    cupy.lib = types.ModuleType("cupy.lib")
    cupy.lib.stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    cupy.lib.stride_tricks.as_strided = _functions.as_strided
    return {"cupy": cupy, "cupy.random": cupy.random, "cupy.cuda": cupy.cuda,
            "cupy.cuda.runtime": cupy.cuda.runtime, "cupy.lib": cupy.lib,
            "cupy.lib.stride_tricks": cupy.lib.stride_tricks}


def install(monkeypatch, device_count: int = 1) -> types.ModuleType:
    """Make ``import cupy`` (and its submodules) give the stand-in until the test ends."""
    modules = build_modules(device_count)
    for name in _MODULE_NAMES:
        monkeypatch.setitem(sys.modules, name, modules[name])
    return modules["cupy"]


def uninstall(monkeypatch) -> None:
    """Make ``import cupy`` fail (as on a machine without CuPy) until the test ends."""
    for name in _MODULE_NAMES:
        monkeypatch.setitem(sys.modules, name, None)
