"""``cupy.<function>``: creation, transfers and the routines convtrain uses, with CuPy's own
parameter lists (a NumPy-only parameter is a TypeError, as on a GPU)."""
from __future__ import annotations

import numpy as np

from tests.strict_cupy._device import (
    _check_dtype, _dev, _need_device, _out, _wrap, ndarray,
)


def _host_copy(obj, dtype=None, order="K", ndmin=0) -> np.ndarray:
    """Host data copied into fresh "device" memory (never sharing the caller's buffer)."""
    if isinstance(obj, ndarray):
        a = np.array(obj._a, dtype=dtype, order=order, copy=True, ndmin=ndmin)
    else:
        a = np.array(obj, dtype=dtype, order=order, copy=True, ndmin=ndmin)
    _check_dtype(a.dtype)
    return a


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray) and not copy and (dtype is None or np.dtype(dtype) == obj.dtype):
        return obj
    return ndarray._from_host_memory(_host_copy(obj, dtype, order if order else "K", ndmin))


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return ndarray._from_host_memory(_host_copy(a, dtype, order or "K"))


def ascontiguousarray(a, dtype=None):
    src = _need_device(a, "ascontiguousarray")
    result = np.ascontiguousarray(src, dtype=None if dtype is None else _check_dtype(dtype))
    return a if result is src else _wrap(result)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    if out is not None:
        np.copyto(out, a)
        return out
    return np.asarray(a, order=order)


def get_array_module(*args):
    import cupy  # the installed stand-in  # noqa: PLC0415
    return cupy if any(isinstance(a, ndarray) for a in args) else np


def empty(shape, dtype=float, order="C"):
    return _wrap(np.empty(shape, _check_dtype(dtype), order=order))


def zeros(shape, dtype=float, order="C"):
    return _wrap(np.zeros(shape, _check_dtype(dtype), order=order))


def ones(shape, dtype=float, order="C"):
    return _wrap(np.ones(shape, _check_dtype(dtype), order=order))


def full(shape, fill_value, dtype=None, order="C"):
    fill = _dev(fill_value)
    dt = _check_dtype(dtype if dtype is not None else np.asarray(fill).dtype)
    return _wrap(np.full(shape, fill, dt, order=order))


def _like(np_func, a, dtype, order, shape, *extra):
    proto = _need_device(a, np_func.__name__)
    return _wrap(np_func(proto, *extra, dtype=None if dtype is None else _check_dtype(dtype),
                         order=order, shape=shape))


def empty_like(prototype, dtype=None, order="K", subok=None, shape=None):
    return _like(np.empty_like, prototype, dtype, order, shape)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    return _like(np.zeros_like, a, dtype, order, shape)


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    return _like(np.ones_like, a, dtype, order, shape)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    return _like(np.full_like, a, dtype, order, shape, _dev(fill_value))


def arange(start, stop=None, step=1, dtype=None):
    return _wrap(np.arange(start, stop, step, dtype=None if dtype is None else _check_dtype(dtype)))


def copyto(dst, src, casting="same_kind", where=None):
    """As ``cupy/_manipulation/basic.py``: a host source must be a scalar or a size-1 array."""
    target = _need_device(dst, "copyto dst")
    if isinstance(src, np.ndarray):
        if src.size != 1:
            raise ValueError("non-scalar numpy.ndarray cannot be used for copyto")
        src = src.squeeze()[()]
    np.copyto(target, _dev(src), casting=casting,
              where=True if where is None else _need_device(where, "copyto where"))


def matmul(x1, x2, /, out=None, *, casting="same_kind", dtype=None):
    kwargs = {"casting": casting}
    if dtype is not None:
        kwargs["dtype"] = _check_dtype(dtype)
    result = np.matmul(_need_device(x1, "matmul"), _need_device(x2, "matmul"), out=_out(out),
                       **kwargs)
    return out if out is not None else _wrap(result)


def dot(a, b, out=None):
    return _need_device_array(a).dot(b, out=out)


def _need_device_array(a) -> ndarray:
    _need_device(a, "argument")
    return a


def sum(a, axis=None, dtype=None, out=None, keepdims=False):  # noqa: A001 - CuPy's name
    return _need_device_array(a).sum(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    return _need_device_array(a).mean(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def amax(a, axis=None, out=None, keepdims=False):
    return _need_device_array(a).max(axis=axis, out=out, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    return _need_device_array(a).min(axis=axis, out=out, keepdims=keepdims)


def argmax(a, axis=None, dtype=None, out=None, keepdims=False):
    return _need_device_array(a).argmax(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def count_nonzero(a, axis=None):
    return _wrap(np.asarray(np.count_nonzero(_need_device(a, "count_nonzero"), axis=axis)))


def where(condition, x=None, y=None):
    if (x is None) != (y is None):
        raise ValueError("Must give either both or none of x and y")
    if x is None:
        return _wrap(np.nonzero(_need_device(condition, "where")))
    return _wrap(np.where(_need_device(condition, "where"), _dev(x), _dev(y)))


def clip(a, a_min, a_max, out=None):
    return _need_device_array(a).clip(a_min, a_max, out=out)


def pad(array, pad_width, mode="constant", **kwargs):  # noqa: A002 - CuPy's name
    return _wrap(np.pad(_need_device(array, "pad"), pad_width, mode=mode, **kwargs))


def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = [_need_device(a, "concatenate") for a in tup]
    result = np.concatenate(arrays, axis=axis, out=_out(out),
                            dtype=None if dtype is None else _check_dtype(dtype), casting=casting)
    return out if out is not None else _wrap(result)


def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
    arrays = [_need_device(a, "stack") for a in tup]
    result = np.stack(arrays, axis=axis, out=_out(out),
                      dtype=None if dtype is None else _check_dtype(dtype), casting=casting)
    return out if out is not None else _wrap(result)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return bool(np.allclose(_need_device(a, "allclose"), _dev(b), rtol=rtol, atol=atol,
                            equal_nan=equal_nan))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return _wrap(np.isclose(_need_device(a, "isclose"), _dev(b), rtol=rtol, atol=atol,
                            equal_nan=equal_nan))


def shares_memory(a, b, max_work=None):
    return bool(np.shares_memory(_need_device(a, "shares_memory"),
                                 _need_device(b, "shares_memory")))


def may_share_memory(a, b, max_work=None):
    return bool(np.may_share_memory(_need_device(a, "may_share_memory"),
                                    _need_device(b, "may_share_memory")))


def as_strided(x, shape=None, strides=None):
    """``cupy.lib.stride_tricks.as_strided`` (no ``subok``/``writeable``, unlike NumPy)."""
    return _wrap(np.lib.stride_tricks.as_strided(_need_device(x, "as_strided"), shape=shape,
                                                 strides=strides))


FUNCTIONS = {f.__name__: f for f in (
    array, asarray, ascontiguousarray, asnumpy, get_array_module, empty, zeros, ones, full,
    empty_like, zeros_like, ones_like, full_like, arange, copyto, matmul, dot, sum, mean, amax,
    amin, argmax, count_nonzero, where, clip, pad, concatenate, stack, allclose, isclose,
    shares_memory, may_share_memory)}
FUNCTIONS["max"] = amax
FUNCTIONS["min"] = amin

#: dtype names CuPy re-exports from NumPy (``cupy.float32 is numpy.float32``).
DTYPE_NAMES = ("bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
               "uint64", "float16", "float32", "float64", "complex64", "complex128", "intp",
               "dtype", "newaxis", "inf", "nan", "pi", "e")
