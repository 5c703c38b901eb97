"""The strict CuPy stand-in's array type and functions (CPU only, for tests; never shipped).

Device memory is simulated by a private NumPy array held inside :class:`ndarray`; every public
entry point unwraps stand-in arrays, refuses host arrays the way CuPy does, runs NumPy, and
wraps the result again. Only names and parameters that real CuPy has are defined (checked
against cupy/cupy's sources: ``cupy/_core/core.pyx``, ``cupy/_manipulation/basic.py``,
``cupy/lib/stride_tricks.py``, ``cupy/random/``), so code that would hit an AttributeError or
TypeError on a GPU hits it here too.

Known differences from real CuPy (none of them hides a convtrain bug):

- STRICTER: ``numpy.<ufunc>(device_array)`` and ``numpy.<function>(device_array)`` raise
  TypeError here. Real CuPy dispatches them to its own functions via ``__array_ufunc__`` /
  ``__array_function__``; the house rule is that code touching device data calls ``xp.``, so the
  stand-in enforces it. The one exception is a NumPy scalar on the left of an operator
  (``np.float32(2) * a``), which Python routes through ``__array_ufunc__`` and which is plain,
  legal code on CuPy.
- STRICTER: any host array or list handed to a stand-in function that takes device arrays
  raises TypeError (real CuPy raises for element-wise functions but lets a few others, e.g.
  ``cupy.sum(numpy_array)``, fall through to NumPy's methods by duck typing).
- Type promotion, rounding and reduction order are NumPy's: results equal NumPy bit for bit,
  whereas a GPU sums in another order (tests comparing backends must use a tolerance anyway).
- Random numbers: deterministic per seed but not CuPy's streams (XORWOW etc. are simulated by
  a NumPy PCG64 seeded from the same ``SeedSequence``).
- No streams, memory pools, kernels, ``cupyx``, dlpack or CUDA array interface.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. "
                       "Please use `.get()` to construct a NumPy array explicitly.")

# CuPy supports numeric and bool dtypes only (no object, string, datetime).
_SUPPORTED_KINDS = frozenset("biufc")


def _is_scalar(x) -> bool:
    """Python or NumPy scalars: what CuPy accepts beside device arrays (not 0-d host arrays)."""
    return isinstance(x, (bool, numbers.Number, np.generic)) and not isinstance(x, np.ndarray)


def _unsupported(x) -> TypeError:
    return TypeError(f"Unsupported type {type(x)}")


def _dev(x):
    """The simulated device memory of a stand-in array, or a scalar; host arrays are refused."""
    if isinstance(x, ndarray):
        return x._a
    if _is_scalar(x):
        return x
    raise _unsupported(x)


def _need_device(x, what: str) -> np.ndarray:
    if not isinstance(x, ndarray):
        raise TypeError(f"{what}: expected cupy.ndarray, got {type(x)}")
    return x._a


def _check_dtype(dtype) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.kind not in _SUPPORTED_KINDS:
        raise ValueError(f"Unsupported dtype {dt}")
    return dt


def _wrap(result):
    """NumPy results as stand-in arrays; NumPy scalars become 0-d arrays (as on CuPy)."""
    if isinstance(result, np.ndarray):
        return ndarray._from_host_memory(result)
    if isinstance(result, np.generic):
        return ndarray._from_host_memory(np.asarray(result))
    if isinstance(result, tuple):
        return tuple(_wrap(r) for r in result)
    return result


def _out(out):
    """``out=`` must be a device array (CuPy refuses NumPy outputs)."""
    if out is None:
        return None
    if not isinstance(out, ndarray):
        raise TypeError(f"Output argument must be cupy.ndarray, got {type(out)}")
    return out._a


def _index(key):
    """Indices: stand-in arrays unwrapped; host int/bool arrays and lists are allowed (CuPy
    copies them to the device), other objects follow NumPy's rules."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, (list, np.ndarray)):
        arr = np.asarray(key)
        if arr.size == 0:
            arr = arr.astype(np.int32)
        if arr.dtype.kind not in "biu":
            raise IndexError("arrays used as indices must be of integer or boolean type "
                             f"(actual: {arr.dtype.type})")
        return arr
    return key


class _Flags:
    def __init__(self, a: np.ndarray):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = bool(a.flags.owndata)

    def __getitem__(self, name: str) -> bool:
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: NOT a NumPy array; its memory is reachable only through ``.get()``."""

    __slots__ = ("_a",)
    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("strict CuPy stand-in: memptr/strides are not simulated")
        self._a = np.empty(shape, _check_dtype(dtype), order=order)

    @classmethod
    def _from_host_memory(cls, a: np.ndarray) -> "ndarray":
        _check_dtype(a.dtype)
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # --- implicit conversion: refused, as on CuPy -------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # ``np.float32(2) * a`` reaches here through NumPy's scalar operators: legal on CuPy.
        # NumPy turns the scalar of ``np.float64(1) < a`` into a 0-d array; CuPy takes its
        # item again (its workaround for numpy/numpy#12142), and so does the stand-in.
        if ufunc.__name__ in _COMPARISONS:
            inputs = tuple(i[()] if isinstance(i, np.ndarray) and i.ndim == 0 else i
                           for i in inputs)
        if (method == "__call__" and not kwargs and ufunc.__name__ in _OPERATOR_UFUNCS
                and any(isinstance(i, np.generic) for i in inputs)
                and all(isinstance(i, ndarray) or _is_scalar(i) for i in inputs)):
            return _wrap(getattr(np, ufunc.__name__)(*[_dev(i) for i in inputs]))
        raise TypeError(f"{IMPLICIT_CONVERSION} (numpy.{ufunc.__name__} called on a "
                        f"cupy.ndarray; use the array's module, xp = array_module(...))")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"{IMPLICIT_CONVERSION} (numpy.{func.__name__} called on a "
                        f"cupy.ndarray; use the array's module, xp = array_module(...))")

    # --- attributes ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self._a.shape

    @shape.setter
    def shape(self, value) -> None:
        self._a.shape = value

    @property
    def dtype(self) -> np.dtype:
        return self._a.dtype

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def strides(self) -> tuple:
        return self._a.strides

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def flags(self) -> _Flags:
        return _Flags(self._a)

    @property
    def T(self) -> "ndarray":  # noqa: N802
        return _wrap(self._a.T)

    @property
    def device(self):
        from tests.strict_cupy._cuda import Device
        return Device(0)

    @property
    def real(self) -> "ndarray":
        return _wrap(self._a.real)

    @property
    def imag(self) -> "ndarray":
        return _wrap(self._a.imag)

    # --- explicit transfers --------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        """A NEW host array (device memory is never shared with the host)."""
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError(f"Only numpy.ndarray can be set to out, got {type(out)}")
            np.copyto(out, self._a)
            return out
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.dtype != self.dtype or arr.shape != self.shape:
            raise ValueError(f"Shape or dtype mismatch: {arr.shape} {arr.dtype} vs "
                             f"{self.shape} {self.dtype}")
        np.copyto(self._a, arr)

    def item(self):
        return self._a.item()

    def tolist(self):
        return self._a.tolist()

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __complex__(self) -> complex:
        return complex(self._a)

    def __bool__(self) -> bool:
        return bool(self._a)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self) -> str:
        return repr(self._a)

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, format_spec: str) -> str:
        return format(self._a, format_spec)

    def __copy__(self) -> "ndarray":
        return self.copy()

    def __deepcopy__(self, memo) -> "ndarray":
        return self.copy()

    def __reduce__(self):
        from tests.strict_cupy._functions import array  # noqa: PLC0415 - import cycle
        return array, (self.get(),)

    # --- shape and copies -------------------------------------------------------------------
    def reshape(self, *shape, order="C", copy=None) -> "ndarray":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _wrap(self._a.reshape(shape, order=order, copy=copy))

    def transpose(self, *axes) -> "ndarray":
        return _wrap(self._a.transpose(*axes))

    def swapaxes(self, axis1, axis2) -> "ndarray":
        return _wrap(self._a.swapaxes(axis1, axis2))

    def ravel(self, order="C") -> "ndarray":
        return _wrap(self._a.ravel(order))

    def flatten(self, order="C") -> "ndarray":
        return _wrap(self._a.flatten(order))

    def squeeze(self, axis=None) -> "ndarray":
        return _wrap(self._a.squeeze(axis))

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> "ndarray":
        return _wrap(self._a.astype(_check_dtype(dtype), order=order,
                                    casting=casting or "unsafe", copy=copy))

    def copy(self, order="C") -> "ndarray":
        return _wrap(self._a.copy(order))

    def view(self, dtype=None, type=None) -> "ndarray":  # noqa: A002 - CuPy's name
        if type is not None:
            raise NotImplementedError("strict CuPy stand-in: view(type=) is not simulated")
        return _wrap(self._a.view() if dtype is None else self._a.view(_check_dtype(dtype)))

    def fill(self, value) -> None:
        if isinstance(value, ndarray) and value.ndim == 0:
            value = value._a[()]
        if not _is_scalar(value):
            raise _unsupported(value)
        self._a.fill(value)

    def repeat(self, repeats, axis=None) -> "ndarray":
        return _wrap(self._a.repeat(repeats, axis))

    def take(self, indices, axis=None, out=None):
        result = self._a.take(_index(indices), axis=axis, out=_out(out))
        return out if out is not None else _wrap(result)

    def nonzero(self):
        return _wrap(self._a.nonzero())

    def dot(self, b, out=None):
        result = np.dot(self._a, _need_device(b, "dot"), out=_out(out))
        return out if out is not None else _wrap(result)

    def clip(self, min=None, max=None, out=None):  # noqa: A002 - CuPy's names
        result = self._a.clip(_maybe_dev(min), _maybe_dev(max), out=_out(out))
        return out if out is not None else _wrap(result)

    def round(self, decimals=0, out=None):
        result = self._a.round(decimals, out=_out(out))
        return out if out is not None else _wrap(result)

    # reductions: CuPy returns 0-d device arrays, never Python/NumPy scalars
    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return _reduce(self._a.sum, out, axis=axis, dtype=dtype, keepdims=keepdims)

    def prod(self, axis=None, dtype=None, out=None, keepdims=False):
        return _reduce(self._a.prod, out, axis=axis, dtype=dtype, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return _reduce(self._a.mean, out, axis=axis, dtype=dtype, keepdims=keepdims)

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return _reduce(self._a.var, out, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims)

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return _reduce(self._a.std, out, axis=axis, dtype=dtype, ddof=ddof, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return _reduce(self._a.max, out, axis=axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return _reduce(self._a.min, out, axis=axis, keepdims=keepdims)

    def argmax(self, axis=None, out=None, dtype=None, keepdims=False):
        result = _reduce(self._a.argmax, out, axis=axis, keepdims=keepdims)
        return result.astype(dtype, copy=False) if dtype is not None and out is None else result

    def argmin(self, axis=None, out=None, dtype=None, keepdims=False):
        result = _reduce(self._a.argmin, out, axis=axis, keepdims=keepdims)
        return result.astype(dtype, copy=False) if dtype is not None and out is None else result

    def all(self, axis=None, out=None, keepdims=False):
        return _reduce(self._a.all, out, axis=axis, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return _reduce(self._a.any, out, axis=axis, keepdims=keepdims)

    def cumsum(self, axis=None, dtype=None, out=None):
        return _reduce(self._a.cumsum, out, axis=axis, dtype=dtype)

    # --- indexing ---------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value) -> None:
        # CuPy refuses assignment from CPU arrays (cupy/cupy#2079): only device arrays/scalars.
        self._a[_index(key)] = _dev(value)

    # --- operators ----------------------------------------------------------------------------
    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)


def _maybe_dev(x):
    return None if x is None else _dev(x)


def _reduce(method, out, **kwargs):
    if kwargs.get("dtype") is not None:
        kwargs["dtype"] = _check_dtype(kwargs["dtype"])
    result = method(out=_out(out), **kwargs)
    return out if out is not None else _wrap(result)


def _binary(op):
    def forward(self, other):
        return _wrap(op(self._a, _dev(other)))

    def reflected(self, other):
        return _wrap(op(_dev(other), self._a))

    def inplace(self, other):
        a = self._a
        a_new = op(a, _dev(other))
        if a_new is not a:  # e.g. a dtype NumPy could not cast in place
            raise TypeError("in-place operation changed the array")
        return self

    return forward, reflected, inplace


for _name, _op, _iop in (
        ("add", operator.add, operator.iadd), ("sub", operator.sub, operator.isub),
        ("mul", operator.mul, operator.imul), ("truediv", operator.truediv, operator.itruediv),
        ("floordiv", operator.floordiv, operator.ifloordiv), ("mod", operator.mod, operator.imod),
        ("pow", operator.pow, operator.ipow), ("matmul", operator.matmul, None),
        ("and", operator.and_, operator.iand), ("or", operator.or_, operator.ior),
        ("xor", operator.xor, operator.ixor), ("lshift", operator.lshift, operator.ilshift),
        ("rshift", operator.rshift, operator.irshift)):
    _fwd, _ref, _ = _binary(_op)
    setattr(ndarray, f"__{_name}__", _fwd)
    setattr(ndarray, f"__r{_name}__", _ref)
    if _iop is not None:
        setattr(ndarray, f"__i{_name}__", _binary(_iop)[2])

for _name, _op in (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)):
    setattr(ndarray, f"__{_name}__", _binary(_op)[0])

_COMPARISONS = frozenset(("greater", "greater_equal", "less", "less_equal", "equal",
                          "not_equal"))
# NumPy ufuncs that Python's operators on a NumPy scalar turn into (see __array_ufunc__).
_OPERATOR_UFUNCS = frozenset((
    "add", "subtract", "multiply", "true_divide", "divide", "floor_divide", "remainder",
    "power", "bitwise_and", "bitwise_or", "bitwise_xor", "left_shift", "right_shift", "less",
    "less_equal", "greater", "greater_equal", "equal", "not_equal", "matmul"))


class ufunc:  # noqa: N801 - CuPy's name
    """An element-wise function: device arrays and scalars in, device arrays out."""

    def __init__(self, name: str):
        self._np = getattr(np, name)
        self.__name__ = name
        self.nin, self.nout = self._np.nin, self._np.nout

    def __repr__(self) -> str:
        return f"<ufunc '{self.__name__}'>"

    def __call__(self, *args, out=None, dtype=None, casting="same_kind"):
        if len(args) != self.nin:
            raise TypeError(f"Wrong number of arguments for {self.__name__}")
        inputs = [_dev(a) for a in args]
        kwargs = {"casting": casting}
        if dtype is not None:
            kwargs["dtype"] = _check_dtype(dtype)
        result = self._np(*inputs, out=_out(out), **kwargs)
        return out if out is not None else _wrap(result)


UFUNC_NAMES = (
    "add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "negative",
    "power", "remainder", "mod", "absolute", "abs", "sqrt", "square", "exp", "log", "log1p",
    "expm1", "tanh", "sign", "maximum", "minimum", "fmax", "fmin", "equal", "not_equal",
    "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or",
    "logical_not", "logical_xor", "invert", "bitwise_and", "bitwise_or", "bitwise_xor",
    "left_shift", "right_shift", "isfinite", "isnan", "isinf", "floor", "ceil", "reciprocal",
)
UFUNCS = {name: ufunc(name) for name in UFUNC_NAMES}
