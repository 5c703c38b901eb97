"""im2col / col2im layout and adjointness, output-size arithmetic and argument parsing."""
import itertools

import numpy as np
import pytest
from omegaconf import OmegaConf

from convtrain.ops import col2im, conv_output_size, im2col, pair, resolve_padding
from convtrain.errors import ConfigError, InternalError


# --- pair -------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    (3, (3, 3)), (0, (0, 0)), ((2, 5), (2, 5)), ([1, 4], (1, 4)), (np.int64(2), (2, 2)),
    ((np.int32(1), 7), (1, 7)), (OmegaConf.create([2, 3]), (2, 3)),  # a YAML list from Hydra
])
def test_pair_accepts_ints_and_pairs(value, expected):
    result = pair(value, "kernel_size")
    assert result == expected
    assert all(type(v) is int for v in result)


@pytest.mark.parametrize("value, fragment", [
    (True, "bool"), (2.0, "2.0"), ("3", "'3'"), ((1, 2, 3), "3 values"), ((1,), "1 values"),
    (-1, "negative"), ((2, -3), "negative"), ((2, 1.5), "1.5"), ((True, 2), "True"), (None, "None"),
    ({"h": 1, "w": 2}, "'h'"), (np.array(3), "array(3)"),
])
def test_pair_rejects_bad_values_naming_the_key(value, fragment):
    with pytest.raises(ConfigError, match="stride") as info:
        pair(value, "stride")
    assert fragment in str(info.value)


# --- resolve_padding ------------------------------------------------------------------
def test_resolve_padding_valid_int_and_pair():
    assert resolve_padding("valid", 3) == (0, 0)
    assert resolve_padding(2, 5) == (2, 2)
    assert resolve_padding((1, 0), (3, 1)) == (1, 0)


@pytest.mark.parametrize("kernel, dilation", [(1, 1), (3, 1), (5, 1), (7, 1), (3, 2), (3, 3),
                                              (5, 2), ((3, 5), (1, 1)), ((1, 3), (2, 2)),
                                              ((2, 3), (2, 1))])
def test_same_padding_keeps_the_size(kernel, dilation):
    padding = resolve_padding("same", kernel, stride=1, dilation=dilation)
    kh, kw = pair(kernel)
    dh, dw = pair(dilation)
    for size in (5, 8, 13):
        assert conv_output_size(size, kh, 1, padding[0], dh) == size
        assert conv_output_size(size, kw, 1, padding[1], dw) == size


@pytest.mark.parametrize("kernel, dilation", [(2, 1), (4, 1), ((3, 2), (1, 1)), (4, 3)])
def test_same_padding_with_even_effective_kernel_explains_why(kernel, dilation):
    with pytest.raises(ConfigError, match="even"):
        resolve_padding("same", kernel, dilation=dilation)


def test_same_padding_needs_stride_one():
    with pytest.raises(ConfigError, match=r"stride 1.*\(2, 2\)"):
        resolve_padding("same", 3, stride=2)


@pytest.mark.parametrize("padding", [-1, (0, -2), "full", 1.5])
def test_bad_padding_is_rejected(padding):
    with pytest.raises(ConfigError, match="padding"):
        resolve_padding(padding, 3)


# --- conv_output_size -----------------------------------------------------------------
def _count_windows(in_size, kernel, stride, padding, dilation):
    """Independent reference: enumerate window starts whose last tap stays inside."""
    padded = in_size + 2 * padding
    return sum(1 for start in range(0, padded, stride) if start + dilation * (kernel - 1) < padded)


@pytest.mark.parametrize("in_size, kernel, stride, padding, dilation",
                         [c for c in itertools.product((1, 4, 7, 10), (1, 2, 3, 5), (1, 2, 3),
                                                       (0, 1, 2), (1, 2))
                          if c[3] * 2 + c[0] >= c[4] * (c[1] - 1) + 1])
def test_conv_output_size_matches_window_count(in_size, kernel, stride, padding, dilation):
    assert conv_output_size(in_size, kernel, stride, padding, dilation) == _count_windows(
        in_size, kernel, stride, padding, dilation)


def test_kernel_larger_than_padded_input_gives_the_numbers():
    with pytest.raises(ConfigError, match=r"kernel size 7 is larger than the padded input 6 "
                                          r"\(input 4 \+ 2\*padding 1\)"):
        conv_output_size(4, 7, 1, 1)
    with pytest.raises(ConfigError, match=r"kernel size 3 \(dilated to 5 by dilation 2\).*"
                                          r"padded input 4"):
        conv_output_size(4, 3, 1, 0, 2)


@pytest.mark.parametrize("args, match", [
    ((5, 3, 0, 0), "stride must be at least 1, got 0"),
    ((5, 0, 1, 0), "kernel size must be at least 1, got 0"),
    ((5, 3, 1, -1), "padding must be at least 0, got -1"),
    ((5, 3, 1, 0, 0), "dilation must be at least 1, got 0"),
    ((5, 3, 1.5, 0), "stride must be an int"),
])
def test_conv_output_size_rejects_bad_arguments(args, match):
    with pytest.raises(ConfigError, match=match):
        conv_output_size(*args)


# --- im2col / col2im ------------------------------------------------------------------
GEOMETRIES = [  # (x_shape, kernel, stride, padding, dilation)
    ((2, 3, 5, 6), (3, 3), (1, 1), (0, 0), (1, 1)),
    ((1, 2, 7, 5), (3, 2), (2, 1), (1, 0), (1, 1)),
    ((3, 1, 8, 8), (2, 2), (2, 2), (0, 0), (1, 1)),
    ((2, 2, 9, 7), (3, 3), (3, 2), (2, 1), (1, 1)),
    ((1, 3, 9, 10), (3, 2), (1, 2), (1, 1), (2, 3)),
    ((2, 1, 4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((1, 2, 6, 6), (5, 5), (1, 1), (2, 2), (1, 1)),
]


def _naive_im2col(x, kernel, stride, padding, dilation):
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cols = np.zeros((c * kh * kw, n * oh * ow), dtype=x.dtype)
    for ci, i, j, ni, y, xx in itertools.product(range(c), range(kh), range(kw), range(n),
                                                range(oh), range(ow)):
        cols[(ci * kh + i) * kw + j, (ni * oh + y) * ow + xx] = xp[ni, ci, y * sh + i * dh,
                                                                    xx * sw + j * dw]
    return cols


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_im2col_matches_naive_layout(geometry):
    x_shape, kernel, stride, padding, dilation = geometry
    x = np.random.default_rng(0).standard_normal(x_shape)
    cols = im2col(x, kernel, stride, padding, dilation)
    np.testing.assert_array_equal(cols, _naive_im2col(x, kernel, stride, padding, dilation))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(geometry):
    """<im2col(x), c> == <x, col2im(c)> for random x and c."""
    x_shape, kernel, stride, padding, dilation = geometry
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    cols_shape = im2col(x, kernel, stride, padding, dilation).shape
    c = rng.standard_normal(cols_shape)
    lhs = np.sum(im2col(x, kernel, stride, padding, dilation) * c)
    back = col2im(c, x_shape, kernel, stride, padding, dilation)
    assert back.shape == x_shape
    rhs = np.sum(x * back)
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_and_col2im_keep_the_dtype(dtype):
    x = np.ones((2, 3, 6, 5), dtype=dtype)
    cols = im2col(x, 3, 2, 1)
    assert cols.dtype == dtype
    back = col2im(cols, x.shape, 3, 2, 1)
    assert back.dtype == dtype
    assert back.flags.c_contiguous


def test_col2im_counts_overlaps():
    """Folding all-ones columns counts how many windows cover each pixel (3x3, stride 1)."""
    x_shape = (1, 1, 4, 4)
    cols = np.ones(im2col(np.zeros(x_shape), 3, 1, 0).shape)
    counts = col2im(cols, x_shape, 3, 1, 0)[0, 0]
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(counts, expected)


def test_im2col_rejects_non_4d_input():
    with pytest.raises(InternalError, match=r"4-D \(N, C, H, W\), got shape \(3, 5, 5\)"):
        im2col(np.zeros((3, 5, 5)), 3, 1, 0)


def test_col2im_rejects_wrong_column_shape():
    with pytest.raises(InternalError, match=r"cols has shape \(9, 10\).*needs \(9, 9\)"):
        col2im(np.zeros((9, 10)), (1, 1, 5, 5), 3, 1, 0)
