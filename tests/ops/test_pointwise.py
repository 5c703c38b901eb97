"""Activations (and erf), dense, dropout, batch norm, softmax and softmax cross-entropy."""
import math
import warnings

import numpy as np
import pytest
from scipy import special as scipy_special
from scipy.special import expit, log_softmax as scipy_log_softmax, logsumexp

from convtrain.ops import (
    batchnorm1d_backward,
    batchnorm1d_forward,
    batchnorm2d_backward,
    batchnorm2d_forward,
    dense_backward,
    dense_forward,
    dropout2d_forward,
    dropout_backward,
    dropout_forward,
    elu_backward,
    elu_forward,
    erf,
    erfc,
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    softmax_backward,
    softmax_cross_entropy,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from convtrain.errors import ConfigError, InternalError
from tests.gradcheck import check_gradients, projected_sum


def _away_from_zero(shape, rng):
    """Values with |x| >= 0.1, so a 1e-6 step never crosses a ReLU kink."""
    x = rng.uniform(0.1, 2.0, shape)
    return x * rng.choice([-1.0, 1.0], shape)


# --- activations ----------------------------------------------------------------------
ACTIVATIONS = {
    "relu": (relu_forward, relu_backward, lambda v: v if v > 0 else 0.0),
    "leaky_relu": (lambda x: leaky_relu_forward(x, 0.2), leaky_relu_backward,
                   lambda v: v if v > 0 else 0.2 * v),
    "tanh": (tanh_forward, tanh_backward, math.tanh),
    "sigmoid": (sigmoid_forward, sigmoid_backward, lambda v: 1 / (1 + math.exp(-v))),
    "elu": (lambda x: elu_forward(x, 0.7), elu_backward,
            lambda v: v if v > 0 else 0.7 * math.expm1(v)),
    "silu": (silu_forward, silu_backward, lambda v: v / (1 + math.exp(-v))),
    # the exact GELU through math.erfc (1 + erf would lose the tiny values of its left tail)
    "gelu": (gelu_forward, gelu_backward, lambda v: v * math.erfc(-v / math.sqrt(2)) / 2),
    "gelu_tanh": (lambda x: gelu_forward(x, "tanh"), gelu_backward,
                  lambda v: v / 2 * (1 + math.tanh(math.sqrt(2 / math.pi)
                                                   * (v + 0.044715 * v ** 3)))),
}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_matches_scalar_formula(name):
    forward, _, scalar = ACTIVATIONS[name]
    x = _away_from_zero((2, 3, 4, 5), np.random.default_rng(0))
    y, _ = forward(x)
    expected = np.vectorize(scalar)(x)
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_gradient_matches_finite_differences(name):
    forward, backward, _ = ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    x = _away_from_zero((2, 3, 4, 4), rng)
    y, cache = forward(x)
    dy = rng.standard_normal(y.shape)
    check_gradients(lambda: projected_sum(forward(x)[0], dy), {"x": x},
                    {"x": backward(dy, cache)}, tol=1e-8)


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_keeps_dtype_and_shape(name, dtype):
    forward, backward, _ = ACTIVATIONS[name]
    x = np.random.default_rng(2).standard_normal((3, 7)).astype(dtype)
    y, cache = forward(x)
    dx = backward(np.ones_like(y), cache)
    assert y.dtype == dtype and dx.dtype == dtype
    assert y.shape == x.shape and dx.shape == x.shape


def test_sigmoid_is_stable_for_huge_inputs():
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an exp overflow warning would fail here
        y, _ = sigmoid_forward(x)
    np.testing.assert_allclose(y, expit(x.astype(np.float64)), rtol=1e-6, atol=1e-30)
    assert y[0] >= 0 and y[-1] == 1.0


def test_relu_gradient_at_zero_is_zero():
    x = np.array([-1.0, 0.0, 2.0])
    y, cache = relu_forward(x)
    np.testing.assert_array_equal(relu_backward(np.ones(3), cache), [0.0, 0.0, 1.0])


def test_activations_reject_integer_input():
    with pytest.raises(InternalError, match="relu: x must be a floating-point array"):
        relu_forward(np.arange(3))
    with pytest.raises(ConfigError, match="negative_slope must be a number"):
        leaky_relu_forward(np.zeros(3), "0.1")


def test_elu_and_gelu_at_and_around_zero_match_torch_conventions():
    """ELU's slope at exactly 0 is alpha (PyTorch's choice); GELU's is 1/2; SiLU's is 1/2."""
    x = np.array([0.0])
    assert elu_backward(np.ones(1), elu_forward(x, 0.7)[1])[0] == 0.7
    assert gelu_backward(np.ones(1), gelu_forward(x)[1])[0] == 0.5
    assert silu_backward(np.ones(1), silu_forward(x)[1])[0] == 0.5


def test_elu_silu_gelu_have_no_overflow_and_the_right_tails():
    x = np.array([-1e4, -800.0, -40.0, -8.0, 8.0, 40.0, 800.0, 1e4])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # overflow or invalid-value warnings would fail here
        elu, _ = elu_forward(x, 1.5)
        silu, _ = silu_forward(x)
        gelu, slope = gelu_forward(x)
    np.testing.assert_allclose(elu, np.where(x > 0, x, 1.5 * np.expm1(np.minimum(x, 0))))
    np.testing.assert_allclose(silu, x * expit(x), rtol=1e-15)
    # GELU's left tail: x * Phi(x), tiny but not 0 at -8 (Phi(-8) = 6.2e-16), exactly 0 later
    phi = scipy_special.ndtr(x)
    np.testing.assert_allclose(gelu, x * phi, rtol=1e-13, atol=0)
    assert gelu[3] < 0 and np.all(gelu[x >= 40] == x[x >= 40]) and np.all(gelu[x <= -40] == 0)
    np.testing.assert_allclose(slope, phi + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi),
                               rtol=1e-13, atol=1e-300)


def test_gelu_tanh_approximation_stays_within_5e_4_of_the_exact_form():
    x = np.linspace(-8, 8, 16001)
    exact, approximate = gelu_forward(x)[0], gelu_forward(x, "tanh")[0]
    assert 1e-4 < np.max(np.abs(exact - approximate)) < 5e-4


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ConfigError, match=r"gelu: approximate must be one of 'none', 'tanh', "
                                          r"got 'erf'"):
        gelu_forward(np.zeros(3), "erf")
    with pytest.raises(ConfigError, match="elu: alpha must be a number"):
        elu_forward(np.zeros(3), "1")


# --- erf / erfc -----------------------------------------------------------------------
def _erf_arguments():
    """A dense grid over the three ranges of Cody's approximation (and past the underflow
    of erfc), random points, the range boundaries and the special values."""
    grid = np.linspace(-30, 30, 120_001)
    boundaries = np.array([0.46875, 4.0, 27.0])
    special = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-10, np.inf, -np.inf])
    return np.concatenate([grid, np.random.default_rng(0).standard_normal(50_000) * 3,
                           boundaries, -boundaries, np.nextafter(boundaries, 0),
                           np.nextafter(boundaries, 99), special])


def test_erf_and_erfc_match_scipy_to_float64_rounding():
    x = _erf_arguments()
    np.testing.assert_allclose(erf(x), scipy_special.erf(x), rtol=1e-15, atol=1e-16)
    # erfc keeps its relative accuracy in the tail, where 1 - erf(x) would be 0, down to the
    # subnormal range (fewer digits there); SciPy's own erfc is off by up to 3e-14 for x > 10.
    expected = scipy_special.erfc(x)
    normal = expected > 1e-300
    np.testing.assert_allclose(erfc(x)[normal], expected[normal], rtol=1e-13, atol=0)
    np.testing.assert_allclose(erfc(x)[~normal], expected[~normal], rtol=0, atol=1e-300)
    assert np.all(erfc(np.array([27.5, 40.0, np.inf])) == 0)
    assert np.isnan(erf(np.array([np.nan]))[0]) and np.isnan(erfc(np.array([np.nan]))[0])


def test_erfc_matches_arbitrary_precision_to_a_few_ulp():
    mpmath = pytest.importorskip("mpmath")
    x = np.concatenate([np.linspace(-6, 27, 600), [-0.46875, 0.46875, 4.0, 4.0 + 1e-12]])
    expected = np.array([float(mpmath.erfc(mpmath.mpf(float(v)))) for v in x])
    np.testing.assert_allclose(erfc(x), expected, rtol=3e-15, atol=0)


def test_erf_and_erfc_in_float32_keep_the_dtype_and_float32_accuracy():
    x = _erf_arguments().astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, yc = erf(x), erfc(x)
    assert y.dtype == yc.dtype == np.float32
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(y, scipy_special.erf(x64), rtol=0, atol=3e-7)
    expected = scipy_special.erfc(x64)
    normal = expected > 1e-35
    np.testing.assert_allclose(yc[normal], expected[normal], rtol=1e-6)


def test_erf_rejects_integers():
    with pytest.raises(InternalError, match="erf: x must be a floating-point array"):
        erf(np.arange(3))


# --- softmax --------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 7), (2, 5, 3, 4)])
def test_softmax_matches_scipy_along_axis_1(shape):
    x = np.random.default_rng(20).standard_normal(shape) * 5
    y, _ = softmax_forward(x)
    np.testing.assert_allclose(y, scipy_special.softmax(x, axis=1), rtol=1e-13)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-14)


def test_softmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 4, 2, 3)) * 2
    y, cache = softmax_forward(x)
    dy = rng.standard_normal(y.shape)
    check_gradients(lambda: projected_sum(softmax_forward(x)[0], dy), {"x": x},
                    {"x": softmax_backward(dy, cache)}, tol=1e-8)


def test_softmax_is_stable_for_huge_inputs_and_keeps_float32():
    x = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4 - 2, 1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, cache = softmax_forward(x)
    assert y.dtype == np.float32 and softmax_backward(np.ones_like(y), cache).dtype == np.float32
    np.testing.assert_allclose(y, scipy_special.softmax(x.astype(np.float64), axis=1),
                               rtol=1e-6, atol=1e-30)
    with pytest.raises(InternalError, match=r"softmax: x must be at least 2-D"):
        softmax_forward(np.zeros(3))
    with pytest.raises(InternalError, match=r"softmax backward: dy must have shape \(2, 3\)"):
        softmax_backward(np.zeros((3, 2), np.float32), cache)


# --- dense ----------------------------------------------------------------------------
def test_dense_forward_matches_explicit_sum():
    rng = np.random.default_rng(3)
    x, weight = rng.standard_normal((4, 5)), rng.standard_normal((3, 5))
    bias = rng.standard_normal(3)
    y, _ = dense_forward(x, weight, bias)
    expected = np.array([[sum(x[n, i] * weight[o, i] for i in range(5)) + bias[o]
                          for o in range(3)] for n in range(4)])
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("has_bias", [True, False])
def test_dense_gradient_matches_finite_differences(has_bias):
    rng = np.random.default_rng(4)
    x, weight = rng.standard_normal((3, 6)), rng.standard_normal((4, 6))
    bias = rng.standard_normal(4) if has_bias else None
    y, cache = dense_forward(x, weight, bias)
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = dense_backward(dy, cache)
    inputs, analytic = {"x": x, "weight": weight}, {"x": dx, "weight": dweight}
    if has_bias:
        inputs["bias"], analytic["bias"] = bias, dbias
    else:
        assert dbias is None
    check_gradients(lambda: projected_sum(dense_forward(x, weight, bias)[0], dy), inputs, analytic,
                    tol=1e-8)


def test_dense_rejects_mismatched_shapes():
    with pytest.raises(InternalError, match=r"input has 5 features but weight \(3, 4\)"):
        dense_forward(np.zeros((2, 5)), np.zeros((3, 4)))
    with pytest.raises(InternalError, match=r"x must be 2-D \(N, in_features\), got shape \(2, 1"):
        dense_forward(np.zeros((2, 1, 5)), np.zeros((3, 5)))
    with pytest.raises(InternalError, match=r"bias must have shape \(3,\), got \(4,\)"):
        dense_forward(np.zeros((2, 5)), np.zeros((3, 5)), np.zeros(4))
    _, cache = dense_forward(np.zeros((2, 5)), np.zeros((3, 5)))
    with pytest.raises(InternalError, match=r"dy must have shape \(2, 3\), got \(3, 2\)"):
        dense_backward(np.zeros((3, 2)), cache)
    with pytest.raises(InternalError, match=r"dy has dtype float32 but the forward input"):
        dense_backward(np.zeros((2, 3), dtype=np.float32), cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_keeps_dtype(dtype):
    x, weight, bias = np.ones((2, 3), dtype), np.ones((4, 3), dtype), np.ones(4, dtype)
    y, cache = dense_forward(x, weight, bias)
    assert y.dtype == dtype
    assert all(g.dtype == dtype for g in dense_backward(np.ones_like(y), cache))


# --- dropout --------------------------------------------------------------------------
def test_dropout_with_p_zero_is_the_identity():
    x = np.random.default_rng(0).standard_normal((3, 4))
    y, mask = dropout_forward(x, 0.0, np.random.default_rng(1))
    assert y is x and mask is None
    dy = np.ones_like(x)
    assert dropout_backward(dy, None, 0.0) is dy


@pytest.mark.parametrize("p", [0.25, 0.5, 0.9])
def test_dropout_drops_a_fraction_p_and_rescales_the_rest(p):
    x = np.full((200, 500), 2.0, dtype=np.float32)
    y, mask = dropout_forward(x, p, np.random.default_rng(5))
    assert y.dtype == np.float32 and mask.dtype == bool
    kept = mask.mean()
    assert abs(kept - (1 - p)) < 0.01  # 100k Bernoulli draws: std < 0.002
    np.testing.assert_allclose(y[mask], 2.0 / (1 - p), rtol=1e-6)
    assert np.all(y[~mask] == 0)
    assert abs(y.mean() - 2.0) < 0.1  # inverted dropout keeps the expectation


def test_dropout_gradient_matches_finite_differences_with_a_fixed_mask():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 6))
    p = 0.4

    def forward():  # the same seed every call freezes the mask
        return dropout_forward(x, p, np.random.default_rng(123))

    y, mask = forward()
    dy = rng.standard_normal(y.shape)
    check_gradients(lambda: projected_sum(forward()[0], dy), {"x": x},
                    {"x": dropout_backward(dy, mask, p)}, tol=1e-8)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "0.5", True])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ConfigError, match=r"p must be a number in \[0, 1\)"):
        dropout_forward(np.zeros(3), p, np.random.default_rng(0))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout2d_zeroes_whole_maps_and_rescales_the_rest(p):
    x = np.random.default_rng(15).standard_normal((100, 40, 3, 2)).astype(np.float32)
    y, mask = dropout2d_forward(x, p, np.random.default_rng(16))
    assert mask.shape == (100, 40, 1, 1) and mask.dtype == bool and y.dtype == np.float32
    assert abs(mask.mean() - (1 - p)) < 0.03  # 4000 Bernoulli draws: std < 0.008
    kept = np.broadcast_to(mask, x.shape)
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-6)
    assert np.all(y[~kept] == 0)
    dy = np.ones_like(x)
    np.testing.assert_allclose(dropout_backward(dy, mask, p), kept / np.float32(1 - p))


def test_dropout2d_gradient_with_a_fixed_mask_and_its_checks():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((3, 5, 2, 3))

    def forward():
        return dropout2d_forward(x, 0.5, np.random.default_rng(3))

    y, mask = forward()
    assert 0 < mask.sum() < mask.size  # some maps kept, some dropped
    dy = rng.standard_normal(y.shape)
    check_gradients(lambda: projected_sum(forward()[0], dy), {"x": x},
                    {"x": dropout_backward(dy, mask, 0.5)}, tol=1e-8)
    assert dropout2d_forward(x, 0.0, None) == (x, None)
    with pytest.raises(ConfigError, match=r"dropout2d: p must be a number in \[0, 1\)"):
        dropout2d_forward(x, 1.0, np.random.default_rng(0))
    with pytest.raises(InternalError, match=r"dropout2d: x must be 4-D \(N, C, H, W\)"):
        dropout2d_forward(np.zeros((3, 5)), 0.5, np.random.default_rng(0))


# --- batch norm -----------------------------------------------------------------------
def _bn_inputs(rng, shape=(4, 3, 5, 4)):
    c = shape[1]
    x = rng.standard_normal(shape) * 2.0 + rng.standard_normal((1, c, 1, 1)) * 3
    return x, rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), \
        rng.uniform(0.5, 2.0, c)


def test_batchnorm_training_forward_and_running_stats():
    rng = np.random.default_rng(7)
    x, gamma, beta, rmean, rvar = _bn_inputs(rng)
    y, _, new_mean, new_var = batchnorm2d_forward(x, gamma, beta, rmean, rvar, 0.1, 1e-5, True)
    for c in range(x.shape[1]):
        values = x[:, c].ravel()
        mean, var = values.mean(), values.var()  # biased variance normalises
        expected = gamma[c] * (x[:, c] - mean) / np.sqrt(var + 1e-5) + beta[c]
        np.testing.assert_allclose(y[:, c], expected, rtol=1e-12, atol=1e-12)
        assert new_mean[c] == pytest.approx(0.9 * rmean[c] + 0.1 * mean)
        assert new_var[c] == pytest.approx(0.9 * rvar[c] + 0.1 * values.var(ddof=1))
    assert y.mean(axis=(0, 2, 3)) == pytest.approx(beta)


def test_batchnorm_does_not_modify_running_stats_in_place():
    rng = np.random.default_rng(8)
    x, gamma, beta, rmean, rvar = _bn_inputs(rng)
    before = rmean.copy(), rvar.copy()
    batchnorm2d_forward(x, gamma, beta, rmean, rvar)
    np.testing.assert_array_equal(rmean, before[0])
    np.testing.assert_array_equal(rvar, before[1])


def test_batchnorm_eval_uses_running_stats():
    rng = np.random.default_rng(9)
    x, gamma, beta, rmean, rvar = _bn_inputs(rng)
    y, _, new_mean, new_var = batchnorm2d_forward(x, gamma, beta, rmean, rvar, eps=1e-3,
                                                  training=False)
    expected = (gamma[None, :, None, None] * (x - rmean[None, :, None, None])
                / np.sqrt(rvar[None, :, None, None] + 1e-3) + beta[None, :, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-12)
    assert new_mean is rmean and new_var is rvar


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradient_matches_finite_differences(training):
    rng = np.random.default_rng(10)
    x, gamma, beta, rmean, rvar = _bn_inputs(rng, (3, 2, 3, 4))

    def forward():
        return batchnorm2d_forward(x, gamma, beta, rmean, rvar, 0.1, 1e-5, training)

    y, cache, _, _ = forward()
    dy = rng.standard_normal(y.shape)
    dx, dgamma, dbeta = batchnorm2d_backward(dy, cache)
    check_gradients(lambda: projected_sum(forward()[0], dy),
                    {"x": x, "gamma": gamma, "beta": beta},
                    {"x": dx, "gamma": dgamma, "beta": dbeta}, tol=1e-6)


def test_batchnorm_keeps_float32():
    rng = np.random.default_rng(11)
    x, gamma, beta, rmean, rvar = (a.astype(np.float32) for a in _bn_inputs(rng))
    y, cache, new_mean, new_var = batchnorm2d_forward(x, gamma, beta, rmean, rvar)
    assert y.dtype == new_mean.dtype == new_var.dtype == np.float32
    assert all(g.dtype == np.float32 for g in batchnorm2d_backward(np.ones_like(y), cache))


def test_batchnorm_rejects_bad_inputs():
    c = np.ones(3)
    with pytest.raises(ConfigError, match=r"more than 1 value per channel.*\(1, 3, 1, 1\)"):
        batchnorm2d_forward(np.zeros((1, 3, 1, 1)), c, c, c, c)
    with pytest.raises(InternalError, match=r"gamma must have shape \(3,\), got \(2,\)"):
        batchnorm2d_forward(np.zeros((2, 3, 2, 2)), np.ones(2), c, c, c)
    with pytest.raises(ConfigError, match=r"momentum must be a number in \[0, 1\], got 1.5"):
        batchnorm2d_forward(np.zeros((2, 3, 2, 2)), c, c, c, c, momentum=1.5)
    with pytest.raises(ConfigError, match=r"eps must be a positive number, got 0"):
        batchnorm2d_forward(np.zeros((2, 3, 2, 2)), c, c, c, c, eps=0)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm1d_normalises_each_feature_over_the_batch(training):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((6, 4)) * 3 + rng.standard_normal(4) * 2
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    rmean, rvar = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)

    def forward():
        return batchnorm1d_forward(x, gamma, beta, rmean, rvar, 0.2, 1e-3, training)

    y, cache, new_mean, new_var = forward()
    mean, var = (x.mean(axis=0), x.var(axis=0)) if training else (rmean, rvar)
    np.testing.assert_allclose(y, gamma * (x - mean) / np.sqrt(var + 1e-3) + beta, rtol=1e-12)
    if training:
        np.testing.assert_allclose(new_mean, 0.8 * rmean + 0.2 * mean)
        np.testing.assert_allclose(new_var, 0.8 * rvar + 0.2 * x.var(axis=0, ddof=1))
    else:
        assert new_mean is rmean and new_var is rvar
    dy = rng.standard_normal(y.shape)
    dx, dgamma, dbeta = batchnorm1d_backward(dy, cache)
    check_gradients(lambda: projected_sum(forward()[0], dy),
                    {"x": x, "gamma": gamma, "beta": beta},
                    {"x": dx, "gamma": dgamma, "beta": dbeta}, tol=1e-6)


def test_batchnorm1d_rejects_a_single_sample_and_maps():
    f = np.ones(3)
    with pytest.raises(ConfigError, match=r"batchnorm1d: training needs more than 1 value per "
                                          r"feature.*\(1, 3\)"):
        batchnorm1d_forward(np.zeros((1, 3)), f, f, f, f)
    batchnorm1d_forward(np.zeros((1, 3)), f, f, f, f, training=False)  # fine in evaluation
    with pytest.raises(InternalError, match=r"batchnorm1d: x must be 2-D \(N, F\)"):
        batchnorm1d_forward(np.zeros((2, 3, 2, 2)), f, f, f, f)


# --- losses ---------------------------------------------------------------------------
def test_log_softmax_matches_scipy():
    logits = np.random.default_rng(12).standard_normal((5, 7)) * 10
    np.testing.assert_allclose(log_softmax(logits), scipy_log_softmax(logits, axis=1), rtol=1e-12)


def test_cross_entropy_matches_the_definition():
    rng = np.random.default_rng(13)
    logits = rng.standard_normal((6, 4))
    labels = rng.integers(0, 4, 6)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    expected = np.mean([logsumexp(logits[n]) - logits[n, labels[n]] for n in range(6)])
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-12)
    assert dlogits.shape == logits.shape


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(14)
    logits = rng.standard_normal((5, 3)) * 3
    labels = np.array([0, 2, 1, 1, 2])
    _, dlogits = softmax_cross_entropy(logits, labels)
    check_gradients(lambda: softmax_cross_entropy(logits, labels)[0], {"logits": logits},
                    {"logits": dlogits}, tol=1e-7)


def test_cross_entropy_does_not_overflow_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4 - 2, 1e4]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dlogits = softmax_cross_entropy(logits, np.array([1, 1]))
    # Row 0: -log softmax = 1e4 - 0 = 1e4; row 1: log(1 + e^-2) + 2 = 2.126928...
    expected = (1e4 + (math.log1p(math.exp(-2)) + 2)) / 2
    assert loss == pytest.approx(expected, rel=1e-5)
    assert np.all(np.isfinite(dlogits)) and dlogits.dtype == np.float32


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 3, 1]), r"label 3 is out of range for K=3 classes"),
    (np.array([0, -1, 1]), r"label -1 is out of range for K=3 classes"),
    (np.array([0.0, 1.0, 2.0]), r"labels must be integer class indices, got dtype float64"),
    (np.array([0, 1]), r"2 labels for 3 rows of logits"),
])
def test_cross_entropy_rejects_bad_labels(labels, match):
    with pytest.raises(ConfigError, match=match):
        softmax_cross_entropy(np.zeros((3, 3)), labels)


@pytest.mark.parametrize("split", [False, True], ids=["alone", "split"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_relu_equals_the_reference(split, dtype):
    """The CPU ReLU (cached zeros, arrays split between the engine's threads from a size on)
    gives the reference's output, mask and gradient bitwise, also for a non-contiguous
    input. (4 MiB touched: over the threads' own 2 MiB floor for a split.)"""
    from convtrain.ops import fast

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 64, 65)).astype(dtype)
    x.flat[::7] = 0.0
    with fast.force_routes(relu_min_parallel_bytes=0 if split else 1 << 62):
        for array in (x, x[..., ::2]):
            y, mask = fast.relu_forward(array)
            y_ref, mask_ref = relu_forward(array)
            np.testing.assert_array_equal(y, y_ref)
            np.testing.assert_array_equal(mask, mask_ref)
            dy = rng.standard_normal(array.shape).astype(dtype)
            np.testing.assert_array_equal(fast.relu_backward(dy, mask),
                                          relu_backward(dy, mask_ref))


def test_fast_dense_equals_the_reference():
    from convtrain.ops import fast

    rng = np.random.default_rng(1)
    x, weight = rng.standard_normal((6, 5)), rng.standard_normal((3, 5))
    bias = rng.standard_normal(3)
    y, cache = fast.dense_forward(x, weight, bias)
    y_ref, cache_ref = dense_forward(x, weight, bias)
    np.testing.assert_allclose(y, y_ref, rtol=1e-14)
    dy = rng.standard_normal(y.shape)
    for a, b in zip(fast.dense_backward(dy, cache), dense_backward(dy, cache_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-14)
    with pytest.raises(InternalError, match="x must be 2-D"):
        fast.dense_forward(np.zeros((2, 1, 5)), weight)


def test_fast_dense_runs_small_gemms_on_one_blas_thread(monkeypatch):
    """Under Routes.dense_single_thread_macs the GEMMs run in a one-thread BLAS block."""
    from convtrain.ops import fast
    from convtrain.ops.fast import dense as fast_dense

    entered = []

    class Recording:
        def __enter__(self):
            entered.append(True)

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(fast_dense, "blas_single_thread", Recording)
    x, weight = np.ones((6, 5)), np.ones((3, 5))  # 90 multiply-adds
    fast.dense_forward(x, weight)
    assert entered == [True]
    with fast.force_routes(dense_single_thread_macs=90):
        fast.dense_forward(x, weight)
    assert entered == [True]
