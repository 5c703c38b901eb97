"""The strict CuPy stand-in is strict: each rule that real CuPy enforces raises here too."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from convtrain.runtime.backend import array_module, cupy_available, get_backend
from tests.strict_cupy import IMPLICIT_CONVERSION, uninstall

IMPLICIT = IMPLICIT_CONVERSION.split(".")[0]  # "Implicit conversion to a NumPy array is not allowed"


@pytest.fixture
def a(strict_cupy):
    return strict_cupy.asarray(np.arange(12, dtype=np.float32).reshape(3, 4))


def test_arrays_are_not_numpy_arrays_and_select_the_cupy_module(strict_cupy, a):
    assert not isinstance(a, np.ndarray)
    assert type(a).__module__.startswith("cupy") and type(a) is strict_cupy.ndarray
    assert array_module(a) is strict_cupy and array_module(a.get()) is np
    assert strict_cupy.get_array_module(a) is strict_cupy
    assert get_backend("cupy").xp is strict_cupy and cupy_available()


def test_the_ndarray_api(strict_cupy, a):
    assert a.shape == (3, 4) and a.dtype == np.float32 and a.size == 12 and a.ndim == 2
    assert a.strides == (16, 4) and a.itemsize == 4 and a.nbytes == 48
    assert a.T.shape == (4, 3) and a.transpose(1, 0).shape == (4, 3)
    assert a.reshape(4, 3).shape == (4, 3) and a.reshape((2, 6)).shape == (2, 6)
    assert a.astype(np.float64).dtype == np.float64 and a.flags.c_contiguous
    for reduced in (a.sum(), a.mean(), a.max(), a.min(), a.argmax(), a[1, 2]):
        # reductions and element access give 0-d device arrays, not host scalars
        assert type(reduced) is strict_cupy.ndarray and reduced.shape == ()
    assert a.sum().item() == 66.0 and float(a.max()) == 11.0 and int(a.argmax()) == 11
    assert a.sum(axis=0, keepdims=True).shape == (1, 4)
    np.testing.assert_array_equal((a * 2 + 1 - a / 2).get(), np.arange(12).reshape(3, 4) * 1.5 + 1)
    assert ((a > 5).get() == (np.arange(12).reshape(3, 4) > 5)).all()
    assert isinstance(a.get(), np.ndarray) and strict_cupy.asnumpy(a).shape == (3, 4)
    assert a.__array_priority__ > 0
    assert pickle.loads(pickle.dumps(a)).shape == (3, 4)


def test_views_share_device_memory_and_transfers_copy(strict_cupy, a):
    view = a[1:, ::2]
    view += 100
    assert a[1, 0].item() == 104 and a[0, 0].item() == 0  # slices are views, in-place ops write
    a[0] = strict_cupy.zeros(4, dtype=np.float32)
    a[0, 0] = 7.0
    assert a[0].get().tolist() == [7, 0, 0, 0]
    host = a.get()
    host[...] = -1
    assert a[0, 0].item() == 7  # .get() is a copy, not a window onto device memory
    source = np.ones(3, np.float32)
    moved = strict_cupy.asarray(source)
    source[0] = 5
    assert moved[0].item() == 1  # asarray copies host data to the device
    assert strict_cupy.asarray(a) is a


@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda x: np.float32(1) + np.ones(3) + x,
                                     np.exp, np.sum, np.copy, lambda x: x.__array__()])
def test_implicit_conversion_to_numpy_is_refused(a, convert):
    with pytest.raises(TypeError, match=IMPLICIT):
        convert(a)


def test_numpy_scalars_on_the_left_of_operators_work_as_on_cupy(strict_cupy, a):
    assert type(np.float32(2) * a) is strict_cupy.ndarray
    assert (np.float32(2) * a).sum().item() == 132
    assert (np.float64(1) < a).sum().item() == 10


@pytest.mark.parametrize("host", [np.ones(4, np.float32), [1.0, 2.0, 3.0, 4.0],
                                  np.array(1.0, np.float32)])
def test_mixing_device_and_host_arrays_is_refused(strict_cupy, a, host):
    for mix in (lambda: a + host, lambda: a == host, lambda: a.__iadd__(host),
                lambda: strict_cupy.maximum(a, host), lambda: strict_cupy.multiply(host, a),
                lambda: strict_cupy.matmul(a, host)):
        with pytest.raises(TypeError):
            mix()
    with pytest.raises(TypeError):
        a[0] = host if np.ndim(host) else np.ones(4)  # CuPy refuses assignment from host arrays
    assert (a + 1).sum().item() == 78 and (a * np.float32(0.5)).sum().item() == 33


def test_copyto_takes_host_scalars_only(strict_cupy, a):
    strict_cupy.copyto(a, np.array([3.0], np.float32))  # size-1 host arrays are scalars to CuPy
    assert a.sum().item() == 36
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray"):
        strict_cupy.copyto(a, np.zeros((3, 4), np.float32))


def test_out_must_be_a_device_array(strict_cupy, a):
    out = strict_cupy.empty((3, 3), np.float32)
    assert strict_cupy.matmul(a, a.T, out=out) is out
    np.testing.assert_allclose(out.get(), a.get() @ a.get().T)
    with pytest.raises(TypeError, match="Output argument must be cupy.ndarray"):
        strict_cupy.add(a, 1, out=np.empty((3, 4), np.float32))


def test_only_cupys_public_names_and_parameters_exist(strict_cupy, a):
    for missing in ("add_at", "may_share_memoryx", "einsum_path", "broadcast_shapes_x"):
        with pytest.raises(AttributeError):
            getattr(strict_cupy, missing)
    with pytest.raises(AttributeError):
        strict_cupy.add.at  # noqa: B018 - not simulated: convtrain must not rely on it
    with pytest.raises(TypeError):  # NumPy's as_strided has writeable=, CuPy's has not
        strict_cupy.lib.stride_tricks.as_strided(a, shape=(2,), strides=(4,), writeable=False)
    with pytest.raises(TypeError):  # NumPy's asarray has copy=, CuPy's has not
        strict_cupy.asarray(np.ones(2), copy=False)
    rng = strict_cupy.random.default_rng(0)
    for numpy_only in ("normal", "permutation", "shuffle", "choice"):
        assert not hasattr(rng, numpy_only)
    with pytest.raises(ValueError, match="Unsupported dtype"):
        strict_cupy.asarray(np.array(["a"]))
    strict_cupy.cuda.Device().synchronize()
    assert strict_cupy.cuda.runtime.getDeviceCount() == 1


def test_random_state_is_a_method_and_draws_are_reproducible(strict_cupy):
    rng = strict_cupy.random.default_rng(3)
    assert callable(rng.bit_generator.state) and isinstance(rng.bit_generator.state(), int)
    first = rng.random((4, 5), dtype=np.float32)
    assert type(first) is strict_cupy.ndarray and first.dtype == np.float32
    np.testing.assert_array_equal(strict_cupy.random.default_rng(3).random((4, 5), dtype=np.float32).get(),
                                  first.get())
    assert not np.array_equal(rng.random((4, 5), dtype=np.float32).get(), first.get())
    philox = strict_cupy.random.Generator(strict_cupy.random.Philox4x3210(3))
    assert not np.array_equal(philox.random((4, 5), dtype=np.float32).get(), first.get())


def test_without_the_fixture_cupy_is_missing(monkeypatch):
    uninstall(monkeypatch)
    assert not cupy_available()
    from convtrain.errors import ConfigError
    with pytest.raises(ConfigError, match="cupy"):
        get_backend("cupy")
