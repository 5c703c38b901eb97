"""Tile and feature-map grids (geometry, scaling) and the PNG encoder (read back by Pillow).
The kernel views are tested in test_kernel_grid.py."""
from __future__ import annotations

import numpy as np
import pytest

from convtrain.data.images import encode_png
from convtrain.errors import InternalError
from convtrain.visuals.grids import BACKGROUND, feature_map_grid, image_tile, tile_grid
from tests.visuals.pillow_png import decode_png


def expected_size(rows, cols, h, w, scale, pad):
    return rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad


def test_tiles_land_where_documented_and_background_elsewhere():
    tiles = np.stack([np.full((2, 3), v, np.uint8) for v in (10, 200, 90)])
    grid = tile_grid(tiles, rows=2, cols=2, scale=2, padding=1)
    assert grid.shape == (2 * (4 + 1) + 1, 2 * (6 + 1) + 1)
    assert np.all(grid[1:5, 1:7] == 10) and np.all(grid[1:5, 8:14] == 200)
    assert np.all(grid[6:10, 1:7] == 90)
    assert np.all(grid[6:10, 8:14] == BACKGROUND)  # the unused 4th cell
    assert np.all(grid[0] == BACKGROUND) and np.all(grid[:, 7] == BACKGROUND)


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


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3), (1, 1), (1, 9, 3), (300, 2)])
def test_png_round_trip_through_pillow(shape):
    img = np.random.default_rng(2).integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_png(data), img)


@pytest.mark.parametrize("channels", [(), (3,)])
def test_png_of_upscaled_tiles_round_trips(channels):
    # what the visuals encode: repeated rows and columns (filtered to zeros), and rows below
    # brighter ones (their differences wrap around mod 256)
    tiles = np.random.default_rng(4).integers(0, 256, size=(6, 5) + channels, dtype=np.uint8)
    img = tiles.repeat(7, axis=0).repeat(3, axis=1)
    np.testing.assert_array_equal(decode_png(encode_png(img)), img)


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
