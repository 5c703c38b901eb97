"""Filter and feature-map grids (geometry, scaling) and the PNG encoder (read back by Pillow)."""
from __future__ import annotations

import numpy as np
import pytest

from convtrain.data.images import encode_png
from convtrain.errors import InternalError
from convtrain.visuals.grids import BACKGROUND, MAX_SIDE, feature_map_grid, image_tile, kernel_grid, \
    tile_grid
from tests.visuals.pillow_png import decode_png


def expected_size(rows, cols, h, w, scale, pad):
    return rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad


@pytest.mark.parametrize(("f", "c", "k"), [(16, 6, 3), (4, 2, 7), (5, 3, 3)])
def test_grey_kernel_grid_geometry_one_tile_per_filter_and_channel(f, c, k):
    w = np.random.default_rng(0).normal(size=(f, c, k, k))
    img = kernel_grid(w, scale=3, padding=2, rgb=False)
    assert img.dtype == np.uint8 and img.shape == expected_size(f, c, k, k, 3, 2)


@pytest.mark.parametrize(("f", "rows", "cols"), [(6, 2, 3), (16, 4, 4), (1, 1, 1), (10, 3, 4)])
def test_single_channel_filters_lie_on_a_near_square_grid(f, rows, cols):
    img = kernel_grid(np.random.default_rng(0).normal(size=(f, 1, 5, 5)), scale=3, padding=2)
    assert img.shape == expected_size(rows, cols, 5, 5, 3, 2)


def test_grid_of_filter_channels_is_row_per_filter():
    # filter f, channel c holds the constant f*10+c: per_filter scaling makes constant tiles
    # mid-grey, so use symmetric scaling, where the sign survives: -1 -> 0, +1 -> 255
    w = np.where((np.arange(3)[:, None] + np.arange(2)[None, :]) % 2 == 0, 1.0, -1.0)
    img = kernel_grid(w[:, :, None, None] * np.ones((3, 2, 2, 2)), scale=1, padding=1,
                      scaling="symmetric")
    for f in range(3):
        for c in range(2):
            y, x = 1 + f * 3, 1 + c * 3
            assert np.all(img[y:y + 2, x:x + 2] == (255 if (f + c) % 2 == 0 else 0))


def test_rgb_first_layer_is_one_colour_tile_per_filter():
    w = np.random.default_rng(0).normal(size=(10, 3, 7, 7))
    img = kernel_grid(w, scale=2, padding=1)
    # 10 filters on a ceil(sqrt(10)) = 4 column grid -> 3 rows
    assert img.shape == expected_size(3, 4, 7, 7, 2, 1) + (3,)


def test_tiles_land_where_documented_and_background_elsewhere():
    tiles = np.stack([np.full((2, 3), v, np.uint8) for v in (10, 200, 90)])
    grid = tile_grid(tiles, rows=2, cols=2, scale=2, padding=1)
    assert grid.shape == (2 * (4 + 1) + 1, 2 * (6 + 1) + 1)
    assert np.all(grid[1:5, 1:7] == 10) and np.all(grid[1:5, 8:14] == 200)
    assert np.all(grid[6:10, 1:7] == 90)
    assert np.all(grid[6:10, 8:14] == BACKGROUND)  # the unused 4th cell
    assert np.all(grid[0] == BACKGROUND) and np.all(grid[:, 7] == BACKGROUND)


def test_per_filter_scaling_uses_full_range_of_each_tile():
    w = np.stack([np.arange(9.0).reshape(1, 3, 3), 1e-3 * np.arange(9.0).reshape(1, 3, 3)])
    img = kernel_grid(w, scale=1, padding=0, scaling="per_filter")
    left, right = img[:, :3], img[:, 3:]  # 2 one-channel filters: one row of 2 tiles
    assert left.min() == 0 and left.max() == 255
    np.testing.assert_array_equal(left, right)  # weak filter shown just as clearly


def test_symmetric_scaling_maps_zero_to_mid_grey():
    w = np.array([[[[-2.0, 0.0, 1.0]]]])
    img = kernel_grid(w, scale=1, padding=0, scaling="symmetric")
    assert img.tolist() == [[0, 128, 191]]  # -2 -> 0, 0 -> 127.5 rounds to 128, 1 -> 0.75*255


def test_constant_filter_does_not_divide_by_zero():
    img = kernel_grid(np.zeros((2, 1, 3, 3)), scale=1, padding=0)
    assert np.all(img == 128)


def test_three_channels_can_be_grey_tiles_and_rgb_needs_three():
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3))
    assert kernel_grid(w, scale=1, padding=1, rgb=False).shape == expected_size(4, 3, 3, 3, 1, 1)
    with pytest.raises(InternalError, match="3 input channels"):
        kernel_grid(np.zeros((4, 2, 3, 3)), rgb=True)


def test_automatic_scale_targets_24px_tiles_and_caps_big_grids():
    # 5x5 kernels: round(24 / 5) = 5x upscale
    assert kernel_grid(np.zeros((4, 2, 5, 5))).shape == expected_size(4, 2, 5, 5, 5, 1)
    # 64x64 filters of 3x3 at 8x would be 64*25+1 = 1601 px: fits MAX_SIDE, kept
    assert kernel_grid(np.zeros((64, 64, 3, 3))).shape == expected_size(64, 64, 3, 3, 8, 1)
    # 128x128 at 8x would be 3201 px: scale s with 128*(3s+1)+1 <= MAX_SIDE -> s = 4
    big = kernel_grid(np.zeros((128, 128, 3, 3), np.float32))
    assert big.shape == expected_size(128, 128, 3, 3, 4, 1) and max(big.shape) <= MAX_SIDE


def test_image_tile_grey_and_rgb():
    grey = image_tile(np.arange(16.0).reshape(1, 4, 4), scale=2)
    assert grey.shape == (8, 8) and grey.min() == 0 and grey.max() == 255
    assert np.all(grey[:2, :2] == 0) and np.all(grey[6:, 6:] == 255)
    rgb = image_tile(np.stack([np.ones((2, 2)), np.zeros((2, 2)), np.zeros((2, 2))]), scale=3)
    assert rgb.shape == (6, 6, 3)
    assert np.all(rgb[..., 0] == 255) and np.all(rgb[..., 1:] == 0)  # pure red stays red


def test_feature_map_grid_is_near_square():
    img = feature_map_grid(np.random.default_rng(1).random((6, 8, 8)), scale=1, padding=1)
    assert img.shape == expected_size(2, 3, 8, 8, 1, 1)


def test_bad_shapes_and_scaling_named():
    with pytest.raises(InternalError, match="expected .F, C, kh, kw."):
        kernel_grid(np.zeros((3, 3)))
    with pytest.raises(InternalError, match="scaling"):
        kernel_grid(np.zeros((1, 1, 3, 3)), scaling="log")


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3), (1, 1)])
def test_png_round_trip_through_pillow(shape):
    img = np.random.default_rng(2).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_png(data), img)


def test_png_of_a_strided_view():
    # grids hand over views (a channel slice, a flipped image): the pixels, not the memory
    img = np.random.default_rng(3).integers(0, 256, size=(6, 8, 4), dtype=np.uint8)[::-1, :, :3]
    np.testing.assert_array_equal(decode_png(encode_png(img)), img)


@pytest.mark.parametrize("image, message", [
    (np.zeros((2, 2), np.float32), "expected uint8 pixels, got float32"),
    (np.zeros((2, 2, 4), np.uint8), r"expected \(H, W\) or \(H, W, 3\), got shape \(2, 2, 4\)"),
    (np.zeros((2,), np.uint8), r"got shape \(2,\)"),
    (np.zeros((0, 3), np.uint8), "empty image"),
])
def test_png_bad_pixels_are_a_bug(image, message):
    with pytest.raises(InternalError, match=message):
        encode_png(image)
