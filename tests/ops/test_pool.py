"""Max / average pooling against naive window loops and central differences; max pooling
both ways: the reference (convtrain.ops.pool) and the CPU speed paths (convtrain.ops.fast)."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from convtrain.errors import ConfigError, InternalError
from convtrain.ops import avgpool2d_backward, avgpool2d_forward
from convtrain.ops import fast
from convtrain.ops import pool as reference
from tests.gradcheck import check_gradients, projected_sum

MAXPOOLS = {
    "reference": SimpleNamespace(forward=reference.maxpool2d_forward,
                                 backward=reference.maxpool2d_backward),
    "fast": SimpleNamespace(forward=fast.maxpool2d_forward, backward=fast.maxpool2d_backward),
}


@pytest.fixture(params=list(MAXPOOLS))
def maxpool(request):
    """Max pooling's forward and backward, the reference or the fast one."""
    return MAXPOOLS[request.param]

GEOMETRIES = [  # (x_shape, kernel, stride, padding)
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0)),
    ((1, 2, 9, 9), (3, 3), (2, 2), (0, 0)),  # overlapping windows
    ((2, 2, 7, 8), (3, 3), (2, 2), (1, 1)),  # overlapping + padding
    ((1, 3, 7, 6), (3, 2), (1, 2), (1, 0)),
    ((2, 1, 10, 7), (4, 3), (3, 1), (2, 1)),
    ((1, 1, 5, 5), (5, 5), (1, 1), (0, 0)),  # global pool
    ((2, 2, 6, 7), (2, 2), (2, 2), (1, 1)),  # non-overlapping + padding
    ((1, 2, 8, 7), (2, 2), (3, 3), (0, 0)),  # stride > kernel: gaps between windows
]


def _windows(x_shape, kernel, stride, padding):
    """Yield (n, c, oy, ox, [(row, col), ...]) with the in-image coordinates of each window,
    in row-major window order; padded positions are left out."""
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    for ni, ci, oy, ox in itertools.product(range(n), range(c), range(oh), range(ow)):
        taps = [(oy * sh + i - ph, ox * sw + j - pw) for i in range(kh) for j in range(kw)]
        yield ni, ci, oy, ox, [(r, q) for r, q in taps if 0 <= r < h and 0 <= q < w], (oh, ow)


def naive_maxpool(x, dy, kernel, stride, padding):
    """Loop reference: forward max and backward routed to the FIRST maximum of each window."""
    y, dx = None, np.zeros_like(x)
    for ni, ci, oy, ox, taps, out_hw in _windows(x.shape, kernel, stride, padding):
        if y is None:
            y = np.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
        values = [x[ni, ci, r, q] for r, q in taps]
        best = max(values)
        y[ni, ci, oy, ox] = best
        r, q = taps[values.index(best)]  # list.index returns the first occurrence
        dx[ni, ci, r, q] += dy[ni, ci, oy, ox]
    return y, dx


def naive_avgpool(x, dy, kernel, stride, padding, count_include_pad):
    y, dx = None, np.zeros_like(x)
    for ni, ci, oy, ox, taps, out_hw in _windows(x.shape, kernel, stride, padding):
        if y is None:
            y = np.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
        divisor = kernel[0] * kernel[1] if count_include_pad else len(taps)
        y[ni, ci, oy, ox] = sum(x[ni, ci, r, q] for r, q in taps) / divisor
        for r, q in taps:
            dx[ni, ci, r, q] += dy[ni, ci, oy, ox] / divisor
    return y, dx


def _distinct_values(shape, rng):
    """Values at least 0.01 apart: no ties, and no max switches under a 1e-6 perturbation."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 + rng.uniform(0, 0.001, size)).reshape(shape) - 1.0


# float32 2x2 pools that tile their input take a faster backward path (whole image rows, ties
# resolved with bit operations); float64 and other windows take the general one.
DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_maxpool_matches_naive_loop(geometry, dtype, maxpool):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape).astype(dtype)
    y, cache = maxpool.forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    expected_y, expected_dx = naive_maxpool(x, dy, kernel, stride, padding)
    np.testing.assert_array_equal(y, expected_y)
    # float32: overlapping windows accumulate in another order than the loop
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(maxpool.backward(dy, cache), expected_dx, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_maxpool_ties_go_to_the_first_maximum_only(geometry, dtype, maxpool):
    """Inputs drawn from {0, 1, 2} are full of ties; each window's gradient must reach exactly
    one input (the first max in row-major order), overlapping windows accumulating."""
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, x_shape).astype(dtype)
    y, cache = maxpool.forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape).astype(dtype)
    expected_y, expected_dx = naive_maxpool(x, dy, kernel, stride, padding)
    np.testing.assert_array_equal(y, expected_y)
    dx = maxpool.backward(dy, cache)
    tol = 1e-12 if dtype == np.float64 else 1e-6  # float32: another accumulation order
    np.testing.assert_allclose(dx, expected_dx, rtol=tol, atol=tol)
    # nothing lost or duplicated (up to the rounding of accumulated float32 gradients)
    lost = abs(dx.sum(dtype=np.float64) - dy.sum(dtype=np.float64))
    assert lost <= tol * np.abs(dy).sum(dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_2x2_every_tie_pattern_routes_to_the_first_maximum(dtype, maxpool):
    """All 15 ways the maxima of a 2x2 window can fall on its four inputs (a, b / c, d), one
    window each, side by side in one image row pair: the gradient reaches only the first
    maximum in row-major order."""
    patterns = [p for p in itertools.product((0, 1), repeat=4) if any(p)]
    x = np.zeros((1, 1, 2, 2 * len(patterns)), dtype=dtype)
    for w, pattern in enumerate(patterns):
        x[0, 0, :, 2 * w:2 * w + 2] = np.reshape(pattern, (2, 2)) * 2.0 - 1.0
    y, cache = maxpool.forward(x, 2, 2)
    dy = np.arange(1, len(patterns) + 1, dtype=dtype).reshape(y.shape)
    dx = maxpool.backward(dy, cache)
    np.testing.assert_array_equal(dx, naive_maxpool(x, dy, (2, 2), (2, 2), (0, 0))[1])
    for w, pattern in enumerate(patterns):
        first = pattern.index(1)
        window = dx[0, 0, :, 2 * w:2 * w + 2].ravel()
        assert window[first] == w + 1 and np.count_nonzero(window) == 1


def test_maxpool_single_tie_in_a_large_float32_batch_is_routed_once(monkeypatch, maxpool):
    """One tied window among 32k, the batch split between the engine's threads: routing on
    whole rows must still pick one input, the first maximum."""
    from convtrain.runtime import threads as parallel

    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)  # split whatever the size
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 8, 32, 32)).astype(np.float32)
    # window (rows 4-5, cols 6-7) of sample 9, channel 1: its max appears twice, at (4, 7)
    # and (5, 6), the other two inputs are smaller
    x[9, 1, 4, 7] = x[9, 1, 5, 6] = 5.0
    x[9, 1, 4, 6] = x[9, 1, 5, 7] = 4.0
    y, cache = maxpool.forward(x, 2, 2)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = maxpool.backward(dy, cache)
    np.testing.assert_array_equal(dx, naive_maxpool(x, dy, (2, 2), (2, 2), (0, 0))[1])
    assert dx[9, 1, 4, 7] == dy[9, 1, 2, 3] and dx[9, 1, 5, 6] == 0


def test_maxpool_2x2_with_float32_gradient_of_a_float64_input_takes_the_general_path(maxpool):
    x = np.random.default_rng(8).standard_normal((2, 3, 6, 8))
    y, cache = maxpool.forward(x, 2, 2)
    dy = np.ones(y.shape, dtype=np.float32)
    dx = maxpool.backward(dy, cache)
    np.testing.assert_array_equal(dx, naive_maxpool(x, dy.astype(np.float64), (2, 2), (2, 2),
                                                    (0, 0))[1])


def test_maxpool_all_equal_window_routes_to_top_left(maxpool):
    x = np.ones((1, 1, 4, 4))
    y, cache = maxpool.forward(x, 2, 2)
    dx = maxpool.backward(np.ones_like(y), cache)
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_maxpool_padding_is_never_the_maximum(maxpool):
    x = -np.arange(1.0, 10.0).reshape(1, 1, 3, 3) - 100  # all strongly negative
    y, _ = maxpool.forward(x, 3, 1, 1)
    assert np.all(y <= -100)  # a zero pad would have won every window


@pytest.mark.parametrize("geometry", GEOMETRIES[:5])
def test_maxpool_gradient_matches_finite_differences(geometry, maxpool):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(2)
    x = _distinct_values(x_shape, rng)
    y, cache = maxpool.forward(x, kernel, stride, padding)
    dy = rng.standard_normal(y.shape)
    dx = maxpool.backward(dy, cache)
    check_gradients(lambda: projected_sum(maxpool.forward(x, kernel, stride, padding)[0], dy),
                    {"x": x}, {"x": dx}, tol=1e-7)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_avgpool_matches_naive_loop(geometry, count_include_pad):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(3)
    x = rng.standard_normal(x_shape)
    y, cache = avgpool2d_forward(x, kernel, stride, padding, count_include_pad)
    dy = rng.standard_normal(y.shape)
    expected_y, expected_dx = naive_avgpool(x, dy, kernel, stride, padding, count_include_pad)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(avgpool2d_backward(dy, cache), expected_dx, rtol=1e-12, atol=1e-14)


def test_count_include_pad_changes_the_border_only():
    x = np.ones((1, 1, 4, 4))
    with_pad, _ = avgpool2d_forward(x, 3, 1, 1, count_include_pad=True)
    without_pad, _ = avgpool2d_forward(x, 3, 1, 1, count_include_pad=False)
    np.testing.assert_allclose(without_pad, 1.0)
    assert with_pad[0, 0, 0, 0] == pytest.approx(4 / 9)  # corner window sees 4 real pixels
    assert with_pad[0, 0, 0, 1] == pytest.approx(6 / 9)
    assert with_pad[0, 0, 1, 1] == pytest.approx(1.0)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("geometry", [GEOMETRIES[2], GEOMETRIES[4]])
def test_avgpool_gradient_matches_finite_differences(geometry, count_include_pad):
    x_shape, kernel, stride, padding = geometry
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    y, cache = avgpool2d_forward(x, kernel, stride, padding, count_include_pad)
    dy = rng.standard_normal(y.shape)
    dx = avgpool2d_backward(dy, cache)

    def loss():
        return projected_sum(avgpool2d_forward(x, kernel, stride, padding, count_include_pad)[0],
                             dy)

    check_gradients(loss, {"x": x}, {"x": dx}, tol=1e-7)


POOLS = {"maxpool": MAXPOOLS["reference"], "fast maxpool": MAXPOOLS["fast"],
         "avgpool": SimpleNamespace(forward=avgpool2d_forward, backward=avgpool2d_backward)}


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pooling_keeps_the_dtype(pool, dtype):
    forward, backward = POOLS[pool].forward, POOLS[pool].backward
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(dtype)
    y, cache = forward(x, 3, 2, 1)
    assert y.dtype == dtype
    assert backward(np.ones_like(y), cache).dtype == dtype


@pytest.mark.parametrize("pool", POOLS)
@pytest.mark.parametrize("args, error, match", [
    (((1, 1, 4, 4), 5, 1, 0), ConfigError, r"kernel size 5 is larger than the padded input 4"),
    (((1, 1, 4, 4), 2, 0, 0), ConfigError, r"stride must be at least 1, got 0"),
    (((1, 1, 6, 6), 3, 1, 2), ConfigError,
     r"padding 2 along the height must be at most half the kernel size 3"),
    (((1, 1, 6, 6), 3, 1, -1), ConfigError, r"padding must not be negative"),
    (((6, 6), 2, 2, 0), InternalError, r"x must be 4-D"),  # the layer hands (N, C, H, W)
])
def test_pooling_rejects_bad_arguments(pool, args, error, match):
    shape, kernel, stride, padding = args
    with pytest.raises(error, match=match):
        POOLS[pool].forward(np.zeros(shape), kernel, stride, padding)


def test_pooling_rejects_integer_input(maxpool):
    with pytest.raises(InternalError, match=r"floating-point.*int64"):
        maxpool.forward(np.zeros((1, 1, 4, 4), dtype=np.int64), 2, 2)


def test_pool_backward_rejects_wrong_dy_shape(maxpool):
    y, cache = maxpool.forward(np.zeros((1, 2, 4, 4)), 2, 2)
    with pytest.raises(InternalError, match=r"dy must have shape \(1, 2, 2, 2\)"):
        maxpool.backward(np.zeros((1, 2, 2, 3)), cache)
    y, cache = avgpool2d_forward(np.zeros((1, 2, 4, 4)), 2, 2)
    with pytest.raises(InternalError, match=r"dy must have shape \(1, 2, 2, 2\)"):
        avgpool2d_backward(np.zeros((1, 2, 2, 3)), cache)


def test_matches_torch_when_available(maxpool):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    x = rng.integers(0, 4, (2, 3, 9, 8)).astype(np.float64)  # many ties
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(tx, (3, 3), (2, 2), (1, 1))
    y, cache = maxpool.forward(x, 3, 2, 1)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_allclose(maxpool.backward(dy, cache), tx.grad.numpy(), rtol=1e-12)
    for include in (True, False):
        tx = torch.tensor(x, requires_grad=True)
        ty = torch.nn.functional.avg_pool2d(tx, (3, 2), (2, 1), (1, 1),
                                            count_include_pad=include)
        y, cache = avgpool2d_forward(x, (3, 2), (2, 1), 1, include)
        dy = rng.standard_normal(y.shape)
        ty.backward(torch.tensor(dy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(avgpool2d_backward(dy, cache), tx.grad.numpy(), rtol=1e-12)
