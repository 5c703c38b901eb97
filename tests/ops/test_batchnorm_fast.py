"""The batch-norm speed path (convtrain.ops.fast.batchnorm) against the reference
(convtrain.ops.batchnorm), which tests/ops/test_pointwise.py checks against per-channel
formulas and finite differences: forward (y, running statistics), backward (dx, dgamma,
dbeta), training and evaluation, 1d and 2d, odd shapes, strided inputs, thread splits."""
import numpy as np
import pytest

from convtrain.errors import ConfigError, InternalError
from convtrain.ops import batchnorm as reference
from convtrain.ops.fast import batchnorm as fast
from convtrain.ops.fast import force_routes
from convtrain.runtime import threads as parallel

SHAPES = [
    (6, 3, 5, 4),  # the common case
    (4, 1, 3, 5),  # one channel
    (5, 3, 1, 1),  # 1x1 maps: L = 1
    (2, 2, 7, 9),  # two samples
    (7, 4),  # batchnorm1d
    (9, 1),  # batchnorm1d, one feature
]


def _ops(module, ndim):
    if ndim == 4:
        return module.batchnorm2d_forward, module.batchnorm2d_backward
    return module.batchnorm1d_forward, module.batchnorm1d_backward


def _inputs(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    channel_shape = (1, c) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * 2.0 + rng.standard_normal(channel_shape) * 3
    params = (rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c),
              rng.uniform(0.5, 2.0, c))
    dy = rng.standard_normal(shape)
    return (x.astype(dtype), *(p.astype(dtype) for p in params), dy.astype(dtype))


def _assert_close(actual, expected, dtype):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if dtype == np.float64:
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12)
    else:  # float32: a few roundings apart, relative to the array's scale
        scale = float(np.max(np.abs(expected))) or 1.0
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _both(shape, dtype, training, x=None, dy=None, momentum=0.3, eps=1e-3):
    x0, gamma, beta, rmean, rvar, dy0 = _inputs(shape, dtype)
    x = x0 if x is None else x
    dy = dy0 if dy is None else dy
    results = []
    for module in (reference, fast):
        forward, backward = _ops(module, len(shape))
        y, cache, new_mean, new_var = forward(x, gamma, beta, rmean, rvar, momentum, eps,
                                              training)
        results.append((y, new_mean, new_var, *backward(dy, cache)))
    return results


@pytest.fixture(params=["inline", "split"])
def thread_split(request, monkeypatch):
    """The fast path on the calling thread alone, or split between two engine threads
    whatever the size."""
    if request.param == "inline":
        yield
        return
    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel, "_num_threads", 2)
    with force_routes(batchnorm_min_parallel_bytes=0):
        yield


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fast_batchnorm_equals_the_reference(shape, training, dtype, thread_split):
    expected, actual = _both(shape, dtype, training)
    for a, e in zip(actual, expected):  # y, running mean and var, dx, dgamma, dbeta
        _assert_close(a, e, dtype)


@pytest.mark.parametrize("training", [True, False])
def test_fast_batchnorm_takes_strided_inputs_and_gradients(training):
    shape = (4, 3, 5, 6)
    x, *_, dy = _inputs(shape, np.float64, seed=1)
    # a channels-last buffer seen as (N, C, H, W), and every other column of a wider gradient
    x_strided = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    dy_strided = np.repeat(dy, 2, axis=3)[..., ::2]
    assert not x_strided.flags.c_contiguous and not dy_strided.flags.c_contiguous
    expected, actual = _both(shape, np.float64, training, x=x_strided, dy=dy_strided)
    for a, e in zip(actual, expected):
        _assert_close(a, e, np.float64)


def test_fast_batchnorm_caches_are_interchangeable_and_inputs_untouched():
    x, gamma, beta, rmean, rvar, dy = _inputs((5, 4, 3, 3), np.float64, seed=2)
    copies = [a.copy() for a in (x, gamma, beta, rmean, rvar, dy)]
    y, cache, new_mean, new_var = fast.batchnorm2d_forward(x, gamma, beta, rmean, rvar)
    _, ref_cache, _, _ = reference.batchnorm2d_forward(x, gamma, beta, rmean, rvar)
    np.testing.assert_allclose(cache.x_hat, ref_cache.x_hat, rtol=1e-12, atol=1e-12)
    for a, e in zip(reference.batchnorm2d_backward(dy, cache),
                    fast.batchnorm2d_backward(dy, cache)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    for original, copy in zip((x, gamma, beta, rmean, rvar, dy), copies):
        np.testing.assert_array_equal(original, copy)
    assert new_mean is not rmean and new_var is not rvar
    assert not np.shares_memory(y, x) and not np.shares_memory(y, cache.x_hat)


def test_fast_batchnorm_variance_of_offset_float32_data():
    """A large mean and a small spread: E[x^2] - E[x]^2 would lose every digit in float32;
    the centred variance matches float64 closely."""
    rng = np.random.default_rng(3)
    x64 = 1000.0 + 0.01 * rng.standard_normal((8, 2, 6, 6))
    gamma, beta = np.ones(2), np.zeros(2)
    y, _, _, var32 = fast.batchnorm2d_forward(
        x64.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32),
        np.zeros(2, np.float32), np.ones(2, np.float32), momentum=1.0, eps=1e-10)
    # float32 holds 1000 + noise to ~6e-5 (a fraction of the spread), so the truth is float64
    # arithmetic on the same float32 inputs
    rounded = x64.astype(np.float32).astype(np.float64)
    _, _, _, exact_var = reference.batchnorm2d_forward(rounded, gamma, beta, np.zeros(2),
                                                             np.ones(2), momentum=1.0, eps=1e-10)
    np.testing.assert_allclose(var32, exact_var, rtol=1e-3)
    # the mean is off by float32's rounding of 1000 (~1e-5, a fraction of the spread), the
    # normalised values still have unit variance
    np.testing.assert_allclose(y.std(axis=(0, 2, 3)), 1.0, rtol=1e-3)


def test_fast_batchnorm_keeps_the_reference_checks():
    c = np.ones(3)
    with pytest.raises(ConfigError, match=r"more than 1 value per channel.*\(1, 3, 1, 1\)"):
        fast.batchnorm2d_forward(np.zeros((1, 3, 1, 1)), c, c, c, c)
    with pytest.raises(InternalError, match=r"gamma must have shape \(3,\), got \(2,\)"):
        fast.batchnorm2d_forward(np.zeros((2, 3, 2, 2)), np.ones(2), c, c, c)
    with pytest.raises(ConfigError, match=r"evaluation mode needs running_mean"):
        fast.batchnorm1d_forward(np.zeros((2, 3)), c, c, None, None, training=False)
    _, cache, _, _ = fast.batchnorm2d_forward(np.arange(24.0).reshape(2, 3, 2, 2), c, c, c, c)
    with pytest.raises(InternalError, match=r"batchnorm2d backward: dy must have shape"):
        fast.batchnorm2d_backward(np.zeros((2, 3, 2, 1)), cache)
