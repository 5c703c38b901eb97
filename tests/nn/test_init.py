"""Initializers: sample statistics against the published formulas, PyTorch's fan definitions,
and the classic filter banks against kernels written out independently here."""
import math
import tracemalloc

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.nn.init import INITIALIZERS, compute_fans, initialize
from convtrain.nn import Conv2d, Dense
from convtrain.nn.model import build_model

N_SAMPLES = (400, 500)  # 200,000 draws: relative standard error of a sample std ~ 0.16 %


def _std_tolerance(n: int, kurtosis: float) -> float:
    """Five standard errors of a sample standard deviation, relative: the variance of s^2 is
    sigma^4 (kurtosis - 1) / n, and s ~ sqrt(s^2) halves the relative error."""
    return 5 * math.sqrt((kurtosis - 1) / n) / 2


@pytest.mark.parametrize("name, fan_in, fan_out, expected_std", [
    ("he_normal", 300, 50, math.sqrt(2 / 300)),
    ("xavier_normal", 300, 50, math.sqrt(2 / 350)),
    ("glorot_normal", 300, 50, math.sqrt(2 / 350)),
    ("lecun_normal", 300, 50, math.sqrt(1 / 300)),
])
def test_normal_initializers_have_the_formula_std(name, fan_in, fan_out, expected_std):
    w = initialize(name, N_SAMPLES, fan_in=fan_in, fan_out=fan_out,
                   rng=np.random.default_rng(1), dtype=np.float64)
    n = w.size
    assert abs(w.std() / expected_std - 1) < _std_tolerance(n, kurtosis=3.0)
    assert abs(w.mean()) < 5 * expected_std / math.sqrt(n)


@pytest.mark.parametrize("name, fan_in, fan_out, expected_bound", [
    ("he_uniform", 300, 50, math.sqrt(6 / 300)),
    ("xavier_uniform", 300, 50, math.sqrt(6 / 350)),
    ("glorot_uniform", 300, 50, math.sqrt(6 / 350)),
    ("lecun_uniform", 300, 50, math.sqrt(3 / 300)),
])
def test_uniform_initializers_fill_exactly_their_bounds(name, fan_in, fan_out, expected_bound):
    w = initialize(name, N_SAMPLES, fan_in=fan_in, fan_out=fan_out,
                   rng=np.random.default_rng(2), dtype=np.float64)
    n = w.size
    assert np.abs(w).max() <= expected_bound
    # With 200k draws the extremes come within bound/20000-ish of the bound.
    assert np.abs(w).max() > expected_bound * (1 - 1e-3)
    assert abs(w.std() / (expected_bound / math.sqrt(3)) - 1) < _std_tolerance(n, kurtosis=1.8)


def test_constant_initializers_and_dtype():
    rng = np.random.default_rng(0)
    zeros = initialize("zeros", (3, 4), rng=rng, dtype=np.float32)
    ones = initialize("ones", (3, 4), rng=rng, dtype=np.float64)
    assert zeros.dtype == np.float32 and not zeros.any()
    assert ones.dtype == np.float64 and (ones == 1).all()


def test_same_rng_state_gives_same_weights():
    a = initialize("he_normal", (4, 3, 3, 3), rng=np.random.default_rng(7))
    b = initialize("he_normal", (4, 3, 3, 3), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape, fans", [
    ((10, 20), (20, 10)),  # dense (out, in)
    ((8, 3, 5, 5), (75, 200)),  # conv (F, C, kh, kw)
    ((8, 2, 3, 5), (30, 120)),  # grouped conv: C/groups = 2 is already in the shape
])
def test_fans_follow_pytorch(shape, fans):
    assert compute_fans(shape) == fans


def test_conv_layer_uses_grouped_fans():
    # 64 input channels in 4 groups -> 16 per group; fan_in = 16*3*3, fan_out = 512*3*3.
    he = Conv2d(64, 512, 3, groups=4, init="he_normal", rng=np.random.default_rng(3),
                dtype=np.float64).params["weight"]
    assert he.shape == (512, 16, 3, 3)
    tol = _std_tolerance(he.size, kurtosis=3.0)
    assert abs(he.std() / math.sqrt(2 / 144) - 1) < tol
    glorot = Conv2d(64, 512, 3, groups=4, init="xavier_normal", rng=np.random.default_rng(4),
                    dtype=np.float64).params["weight"]
    assert abs(glorot.std() / math.sqrt(2 / (144 + 4608)) - 1) < tol


def test_dense_layer_fans_and_zero_bias():
    layer = Dense(1000, 300, init="lecun_normal", rng=np.random.default_rng(5), dtype=np.float64)
    w = layer.params["weight"]
    assert w.shape == (300, 1000)
    assert abs(w.std() / math.sqrt(1 / 1000) - 1) < _std_tolerance(w.size, 3.0)
    assert not layer.params["bias"].any()


# --- classic filter banks -------------------------------------------------------------------
SOBEL_X = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float)
SOBEL_Y = SOBEL_X.T
VERTICAL = np.array([[1, 0, -1]] * 3, float)
HORIZONTAL = VERTICAL.T
BOX = np.full((3, 3), 1 / 9)
GAUSS = np.outer([1, 2, 1], [1, 2, 1]) / 16
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], float)
IDENTITY = np.zeros((3, 3))
IDENTITY[1, 1] = 1

BANKS = {
    "sobel": [SOBEL_X, SOBEL_Y],
    "edges": [VERTICAL, HORIZONTAL],
    "box_blur": [BOX],
    "gaussian_blur": [GAUSS],
    "sharpen": [SHARPEN],
    "identity": [IDENTITY],
    "classic": [SOBEL_X, SOBEL_Y, VERTICAL, HORIZONTAL, BOX, GAUSS, SHARPEN, IDENTITY],
}


@pytest.mark.parametrize("bank", sorted(BANKS))
def test_filter_bank_cycles_kernels_over_filters_and_averages_channels(bank):
    filters, channels = 11, 3
    w = initialize(bank, (filters, channels, 3, 3), rng=np.random.default_rng(0),
                   dtype=np.float64)
    kernels = BANKS[bank]
    assert w.shape == (filters, channels, 3, 3)
    for f in range(filters):
        for c in range(channels):
            np.testing.assert_allclose(w[f, c], kernels[f % len(kernels)] / channels)


def test_identity_bank_reproduces_the_channel_mean():
    # The 1/C scaling makes an identity filter return the average of the input channels.
    rng = np.random.default_rng(0)
    conv = Conv2d(3, 1, 3, padding=1, init="identity", dtype=np.float64)
    x = rng.standard_normal((2, 3, 5, 6))
    np.testing.assert_allclose(conv.forward(x)[:, 0], x.mean(axis=1), atol=1e-12)


def test_filter_banks_need_3x3_kernels():
    with pytest.raises(ConfigError, match=r"layer 'conv2d' argument 'init'.*3x3.*5x5"):
        Conv2d(1, 4, 5, init="sobel")
    with pytest.raises(ConfigError, match="only initializes conv weights"):
        Dense(9, 4, init="sharpen")


def test_unknown_initializer_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"^w\.init: Unknown initializer 'he_normall' "
                                          r"\(known initializers: .*\); did you mean 'he_normal'\?"):
        initialize("he_normall", (2, 2), rng=np.random.default_rng(0), where="w.init")


def test_registry_lists_every_documented_name():
    expected = {"he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "glorot_normal",
                "glorot_uniform", "lecun_normal", "lecun_uniform", "zeros", "ones", "sobel",
                "edges", "box_blur", "gaussian_blur", "sharpen", "identity", "classic"}
    assert expected <= set(INITIALIZERS.names())


@pytest.mark.parametrize("name", ["he_normal", "xavier_uniform", "zeros"])
def test_weights_are_drawn_in_the_target_dtype(name):
    """No float64 intermediate: the peak is one float32 array, not 8 + 4 bytes per weight."""
    shape = (1000, 1000)
    tracemalloc.start()
    try:
        w = initialize(name, shape, rng=np.random.default_rng(0), dtype=np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.dtype == np.float32
    assert peak < 1.25 * w.nbytes


def test_too_large_layer_is_a_config_error_with_its_size():
    # 4e14 float32 weights (about 1.4 PiB): beyond any machine's address space
    gib = 10**14 * 4 * 4 / 2**30
    with pytest.raises(ConfigError, match=rf"^model\.layers\.fc1: cannot allocate its float32 "
                                          rf"weight of shape \(100000000000000, 4\) "
                                          rf"\({gib:,.1f} GiB\)"):
        build_model({"layers": {"flat": {"type": "flatten"},
                                "fc1": {"type": "dense", "units": 10**14}}}, (1, 2, 2), seed=0)
