"""The worked examples of /work/shared/seed/foundations-of-cnns.md, run through our engine.

The seed stores images as (H, W, C) and filters as (f, f, C_in, C_out); our layout is
(N, C, H, W) and (F, C, kh, kw). Expected values come from the naive loops below, written
straight from the seed's own algorithm text, NEVER from its printed results: several printed
results are wrong. Each wrong number is named in a comment and asserted to differ from ours
(see docs/seed-errata.md).
"""
import numpy as np
import pytest

from convtrain.ops import conv2d_backward, conv2d_forward


def naive_forward_hwc(image, filters, bias, stride=1):
    """Seed's "Multi-Filter Forward Propagation" algorithm (no padding), as plain loops.

    image (H, W, C_in), filters (f, f, C_in, C_out), bias (C_out,) -> (H_out, W_out, C_out).
    """
    h, w, c_in = image.shape
    f, _, _, c_out = filters.shape
    h_out, w_out = (h - f) // stride + 1, (w - f) // stride + 1
    out = np.zeros((h_out, w_out, c_out))
    for k in range(c_out):
        for i in range(h_out):
            for j in range(w_out):
                total = 0.0
                for c in range(c_in):
                    for m in range(f):
                        for n in range(f):
                            total += image[i * stride + m, j * stride + n, c] * filters[m, n, c, k]
                out[i, j, k] = total + bias[k]
    return out


def naive_backward_hwc(image, filters, d_out, stride=1):
    """Seed's "Multi-Filter Backward Propagation" algorithm as plain loops.

    Returns (dF (f, f, C_in, C_out), db (C_out,), dI (H, W, C_in)).
    """
    f, _, c_in, c_out = filters.shape
    d_filters, d_bias, d_image = np.zeros(filters.shape), np.zeros(c_out), np.zeros(image.shape)
    for k in range(c_out):
        d_bias[k] = d_out[:, :, k].sum()
        for i in range(d_out.shape[0]):
            for j in range(d_out.shape[1]):
                g = d_out[i, j, k]
                for c in range(c_in):
                    for m in range(f):
                        for n in range(f):
                            d_filters[m, n, c, k] += image[i * stride + m, j * stride + n, c] * g
                            d_image[i * stride + m, j * stride + n, c] += filters[m, n, c, k] * g
    return d_filters, d_bias, d_image


def ours_forward_hwc(image, filters, bias):
    """Run our engine on seed-layout arrays and return the output in seed layout."""
    x = np.asarray(image, dtype=np.float64).transpose(2, 0, 1)[None]  # (1, C, H, W)
    weight = np.asarray(filters, dtype=np.float64).transpose(3, 2, 0, 1)  # (F, C, f, f)
    y, cache = conv2d_forward(np.ascontiguousarray(x), np.ascontiguousarray(weight),
                              np.asarray(bias, dtype=np.float64))
    return y[0].transpose(1, 2, 0), cache  # (H_out, W_out, C_out)


def stack_filters(per_channel_per_filter):
    """[[filter0_ch0, filter0_ch1, ...], [filter1_ch0, ...]] -> (f, f, C_in, C_out)."""
    return np.array(per_channel_per_filter, dtype=np.float64).transpose(2, 3, 1, 0)


VERTICAL = [[1, 0, -1], [1, 0, -1], [1, 0, -1]]
HORIZONTAL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]


def test_6x6_vertical_edge_example():
    """Section "Step-by-Step Calculation Example"."""
    image = np.array([[3, 0, 1, 2, 7, 4],
                      [1, 5, 8, 9, 3, 1],
                      [2, 7, 2, 5, 1, 3],
                      [0, 1, 3, 1, 7, 8],
                      [4, 2, 1, 6, 2, 8],
                      [2, 4, 5, 2, 3, 9]], dtype=np.float64)[:, :, None]
    filters = stack_filters([[VERTICAL]])
    ours, _ = ours_forward_hwc(image, filters, [0.0])
    expected = naive_forward_hwc(image, filters, [0.0])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-12)
    out = ours[:, :, 0]
    assert out.shape == (4, 4)
    # ERRATUM: the seed prints the last two rows as [0, -2, -2, -7] and [4, 0, 0, -6]; the
    # correct rows are [0, -2, -4, -7] and [-3, -2, -3, -16]. (Rows 0-1 and its hand-worked
    # entries (0,0)=-5, (0,1)=-4, (0,2)=0, (0,3)=8, (1,0)=-10 are right.)
    seed_wrong = {(2, 2): -2, (3, 0): 4, (3, 1): 0, (3, 2): 0, (3, 3): -6}
    for position, wrong in seed_wrong.items():
        assert out[position] != wrong, position


def test_6x6x2_two_filter_example_with_biases():
    """Section "Complete Example with Multiple Channels": 2 filters, biases 0.5 / -0.3."""
    channel0 = [[1, 2, 3, 0, 1, 2],
                [0, 1, 4, 3, 2, 1],
                [2, 3, 1, 2, 0, 3],
                [1, 0, 2, 1, 3, 2],
                [3, 2, 1, 0, 1, 4],
                [0, 1, 2, 3, 2, 1]]
    channel1 = [[0, 1, 2, 1, 0, 1],
                [1, 2, 0, 3, 1, 2],
                [2, 1, 3, 2, 1, 0],
                [0, 3, 1, 2, 0, 3],
                [1, 0, 2, 1, 3, 2],
                [2, 1, 0, 3, 1, 0]]
    image = np.stack([channel0, channel1], axis=-1).astype(np.float64)
    filters = stack_filters([
        [VERTICAL, [[0, 1, 0], [0, 1, 0], [0, 1, 0]]],
        [HORIZONTAL, [[0, 0, 0], [1, 1, 1], [0, 0, 0]]],
    ])
    bias = [0.5, -0.3]
    ours, _ = ours_forward_hwc(image, filters, bias)
    np.testing.assert_allclose(ours, naive_forward_hwc(image, filters, bias), rtol=0, atol=1e-12)
    assert ours.shape == (4, 4, 2)
    # The seed only works out Output[0,0,0] (-5 + 4 + 0.5 = -0.5), which is right.


def _example_4x4x2():
    channel0 = np.arange(1, 17, dtype=np.float64).reshape(4, 4)
    channel1 = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], np.float64)
    image = np.stack([channel0, channel1], axis=-1)
    filters = stack_filters([
        [[[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]]],
        [[[1, 1], [1, 1]], [[1, 1], [1, 1]]],
    ])
    return image, filters, [0.0, -1.0]


def test_4x4x2_two_filter_forward():
    """Section "Detailed Example with 2 Filters": biases 0 and -1."""
    image, filters, bias = _example_4x4x2()
    ours, _ = ours_forward_hwc(image, filters, bias)
    np.testing.assert_allclose(ours, naive_forward_hwc(image, filters, bias), rtol=0, atol=1e-12)
    # ERRATUM: the seed prints Output[:,:,0] = [[9, 11, 13], [17, 19, 21], [25, 27, 29]]; only
    # the hand-worked 9 is right. Correct: [[9, 12, 15], [19, 22, 25], [29, 32, 35]]
    # (each step right adds 3, not 2; each step down adds 10, not 8).
    seed_channel0 = np.array([[9, 11, 13], [17, 19, 21], [25, 27, 29]])
    # ERRATUM: the seed prints Output[:,:,1] = [[17, 21, 25], [33, 37, 41], [49, 53, 57]];
    # only the hand-worked 17 is right. Correct: [[17, 23, 29], [37, 43, 49], [57, 63, 69]].
    seed_channel1 = np.array([[17, 21, 25], [33, 37, 41], [49, 53, 57]])
    for ours_channel, seed_channel in ((ours[:, :, 0], seed_channel0),
                                       (ours[:, :, 1], seed_channel1)):
        wrong = np.ones((3, 3), dtype=bool)
        wrong[0, 0] = False
        assert ours_channel[0, 0] == seed_channel[0, 0]  # agrees where the seed shows its work
        assert np.all(ours_channel[wrong] != seed_channel[wrong])


def test_4x4x2_two_filter_backward():
    """Section "Backward Propagation with Filters", with the seed's dL/dOutput."""
    image, filters, bias = _example_4x4x2()
    d_out = np.stack([
        [[0.1, 0.2, 0.1], [0.2, 0.3, 0.2], [0.1, 0.2, 0.1]],
        [[0.3, 0.1, 0.2], [0.2, 0.4, 0.1], [0.3, 0.2, 0.3]],
    ], axis=-1)  # (3, 3, 2)
    _, cache = ours_forward_hwc(image, filters, bias)
    dx, dweight, dbias = conv2d_backward(np.ascontiguousarray(d_out.transpose(2, 0, 1)[None]),
                                         cache)
    d_filters, d_bias, d_image = naive_backward_hwc(image, filters, d_out)
    np.testing.assert_allclose(dbias, d_bias, rtol=1e-12)
    np.testing.assert_allclose(dweight.transpose(2, 3, 1, 0), d_filters, rtol=1e-12)
    np.testing.assert_allclose(dx[0].transpose(1, 2, 0), d_image, rtol=1e-12, atol=1e-15)
    # The seed's printed backward numbers (dL/db = 1.5 and 2.1, dL/dI[0,0,0] = 0.4,
    # dL/dI[1,1,0] = 1.4 and the partial filter-gradient terms) all agree with this reference.
    # ERRATUM: its "More Practical Formula" for dL/dI, with floor((i-m)/s), is only right for
    # stride 1. Check stride 2 against the loop algorithm, and that the floor formula differs.
    big_image = np.random.default_rng(0).standard_normal((7, 7, 2))
    d_out2 = np.random.default_rng(1).standard_normal((3, 3, 2))
    x = np.ascontiguousarray(big_image.transpose(2, 0, 1)[None])
    weight = np.ascontiguousarray(filters.transpose(3, 2, 0, 1))
    _, cache2 = conv2d_forward(x, weight, np.zeros(2), stride=2)
    dx2, dweight2, _ = conv2d_backward(np.ascontiguousarray(d_out2.transpose(2, 0, 1)[None]),
                                       cache2)
    d_filters2, _, d_image2 = naive_backward_hwc(big_image, filters, d_out2, stride=2)
    np.testing.assert_allclose(dx2[0].transpose(1, 2, 0), d_image2, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dweight2.transpose(2, 3, 1, 0), d_filters2, rtol=1e-12)
    # The floor formula is right for stride 1 ...
    np.testing.assert_allclose(seed_floor_formula_input_grad(image.shape, filters, d_out, 1),
                               d_image, rtol=1e-12)
    # ... ERRATUM: but for stride 2 it also adds terms where (i - m) is not a multiple of s.
    floor_formula = seed_floor_formula_input_grad(big_image.shape, filters, d_out2, stride=2)
    assert not np.allclose(floor_formula, d_image2)


def seed_floor_formula_input_grad(image_shape, filters, d_out, stride):
    """The seed's "More Practical Formula": dI[i,j,c] = sum over m,n,k of
    dOut[floor((i-m)/s), floor((j-n)/s), k] * F[m,n,c,k], over in-range output indices."""
    f, _, c_in, c_out = filters.shape
    d_image = np.zeros(image_shape)
    for i in range(image_shape[0]):
        for j in range(image_shape[1]):
            for c in range(c_in):
                for m in range(f):
                    for n in range(f):
                        oi, oj = (i - m) // stride, (j - n) // stride
                        inside = 0 <= oi < d_out.shape[0] and 0 <= oj < d_out.shape[1]
                        if i - m >= 0 and j - n >= 0 and inside:
                            d_image[i, j, c] += sum(d_out[oi, oj, k] * filters[m, n, c, k]
                                                    for k in range(c_out))
    return d_image


@pytest.mark.parametrize("orientation", ["vertical", "horizontal"])
def test_10_100_edge_detector_images(orientation):
    """Section "Filter Examples with Calculations", examples 1 and 2."""
    row = np.array([10, 10, 10, 100, 100, 100], dtype=np.float64)
    if orientation == "vertical":
        image, kernel = np.tile(row, (6, 1)), VERTICAL
    else:
        image, kernel = np.tile(row[:, None], (1, 6)), HORIZONTAL
    filters = stack_filters([[kernel]])
    ours, _ = ours_forward_hwc(image[:, :, None], filters, [0.0])
    out = ours[:, :, 0]
    np.testing.assert_allclose(out, naive_forward_hwc(image[:, :, None], filters, [0.0])[:, :, 0],
                               rtol=0, atol=1e-12)
    if orientation == "vertical":
        # ERRATUM: the seed's complete output has -270 only in column 2 and claims
        # Output[1,1] = 0, working it on the region [10, 10, 10] per row; the window at (1,1)
        # covers columns 1..3 = [10, 10, 100], so Output[1,1] = -270 and column 1 is -270 too.
        # (Its Output[1,2] = -270 is right although it prints the region as [10, 10, 100]
        # instead of [10, 100, 100].)
        assert np.all(out[:, 1] != 0)
        assert out[1, 1] == out[1, 2]
    else:
        # ERRATUM: the seed's complete output has -270 only in row 1; row 2 (window rows 2..4 =
        # [10, 100, 100]) is -270 as well, not 0.
        assert np.all(out[2, :] != 0)
        assert np.all(out[1, :] == out[2, :])


def test_4x4x3_rgb_example():
    """Section "Example 3: Multi-Channel Filter (RGB)", bias 0."""
    red = [[100, 100, 50, 50], [100, 100, 50, 50], [20, 20, 80, 80], [20, 20, 80, 80]]
    green = [[50, 50, 100, 100], [50, 50, 100, 100], [80, 80, 20, 20], [80, 80, 20, 20]]
    blue = [[30, 30, 70, 70], [30, 30, 70, 70], [70, 70, 30, 30], [70, 70, 30, 30]]
    image = np.stack([red, green, blue], axis=-1).astype(np.float64)
    half = (np.array(VERTICAL) * 0.5).tolist()
    filters = stack_filters([[VERTICAL, half, half]])
    ours, _ = ours_forward_hwc(image, filters, [0.0])
    np.testing.assert_allclose(ours, naive_forward_hwc(image, filters, [0.0]), rtol=0, atol=1e-12)
    assert ours.shape == (2, 2, 1)
    # The seed only works out Output[0,0] (40 - 20 - 20 = 0), which is right.
