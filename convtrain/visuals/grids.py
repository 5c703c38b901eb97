"""Pictures of what a network learned: filter grids and feature-map grids as uint8 images.

Host-side NumPy only (callers pass ``backend.to_numpy(...)`` arrays).

Geometry (documented so tests and users can rely on it): tiles are upscaled by an integer
``scale`` (nearest neighbour) and separated by ``padding`` pixels of the background grey on every
side, so a grid of ``rows x cols`` tiles of ``h x w`` pixels is
``(rows * (h*scale + padding) + padding) x (cols * (w*scale + padding) + padding)``.

When ``scale`` is not given it is chosen automatically: :func:`auto_scale` of the tile size
(tiles about 24 px for kernels, 64 px for feature maps), lowered (never below 1) so that
neither side of the grid exceeds :data:`MAX_SIDE` pixels.
"""
from __future__ import annotations

import math

import numpy as np

from convtrain.errors import InternalError

BACKGROUND = 32  # dark grey separates tiles from both black and white weights
SCALINGS = ("per_filter", "symmetric")
MAX_SIDE = 2048  # automatic scales keep big layers' grids (e.g. 64x64 filters) viewable


def auto_scale(kernel_size: int, target: int = 24) -> int:
    """Integer upscale factor that makes a ``kernel_size`` tile about ``target`` pixels wide."""
    return max(1, round(target / max(1, kernel_size)))


def _grid_scale(rows: int, cols: int, h: int, w: int, padding: int, preferred: int) -> int:
    """``preferred``, lowered so the grid fits :data:`MAX_SIDE` (at least 1)."""
    fit_h = ((MAX_SIDE - padding) // max(1, rows) - padding) // max(1, h)
    fit_w = ((MAX_SIDE - padding) // max(1, cols) - padding) // max(1, w)
    return max(1, min(preferred, fit_h, fit_w))


def _normalise(tiles: np.ndarray, scaling: str) -> np.ndarray:
    """Map each tile (first axis) to [0, 255].

    ``per_filter``: min..max of each tile -> 0..255 (shows the pattern of every filter, even weak
    ones). ``symmetric``: -a..+a -> 0..255 with a = max |w| of the tile, so 0 is mid-grey (128),
    positive weights are light and negative dark: signs are comparable across tiles.
    """
    t = tiles.astype(np.float64)
    axes = tuple(range(1, t.ndim))
    if scaling == "per_filter":
        lo = t.min(axis=axes, keepdims=True)
        span = t.max(axis=axes, keepdims=True) - lo
        out = np.where(span > 0, (t - lo) / np.where(span > 0, span, 1), 0.5)
    elif scaling == "symmetric":
        a = np.abs(t).max(axis=axes, keepdims=True)
        out = np.where(a > 0, (t / np.where(a > 0, a, 1) + 1) / 2, 0.5)
    else:
        raise InternalError(f"scaling: expected one of {', '.join(SCALINGS)}, got {scaling!r}")
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def tile_grid(tiles: np.ndarray, rows: int, cols: int, *, scale: int = 1,
              padding: int = 1) -> np.ndarray:
    """Lay out ``tiles`` ``(n, h, w)`` or ``(n, h, w, 3)`` (uint8) row-major on a grid."""
    n, h, w = tiles.shape[:3]
    if n > rows * cols:
        raise InternalError(f"{n} tiles do not fit a {rows}x{cols} grid")
    th, tw = h * scale, w * scale
    extra = tiles.shape[3:]
    # every cell = tile + its right/bottom padding; one reshape lays the cells out row-major
    # (a Python loop over the tiles costs ~1 ms per 500 tiles)
    cells = np.full((rows * cols, th + padding, tw + padding) + extra, BACKGROUND, np.uint8)
    cells[:n, :th, :tw] = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    body = cells.reshape((rows, cols, th + padding, tw + padding) + extra).swapaxes(1, 2)
    grid = np.full((rows * (th + padding) + padding, cols * (tw + padding) + padding) + extra,
                   BACKGROUND, np.uint8)
    grid[padding:, padding:] = body.reshape((rows * (th + padding), cols * (tw + padding)) + extra)
    return grid


def kernel_grid(weight: np.ndarray, *, scaling: str = "per_filter", scale: int | None = None,
                padding: int = 1, rgb: bool | None = None) -> np.ndarray:
    """A picture of a conv layer's filters.

    ``weight`` ``(F, C, kh, kw)``. RGB mode (``rgb=True``; ``None`` means ``C == 3``, right for
    a first layer on RGB images): each filter is one RGB tile, normalised over its three
    channels together, on a near-square grid of ``ceil(sqrt(F))`` columns and
    ``ceil(F / cols)`` rows. Otherwise one grey tile per (filter, input channel): row f holds
    filter f's C channels (F rows, C columns), except that single-channel filters (a first
    layer on grey images) use the same near-square grid as RGB tiles instead of one column.
    Returns uint8 ``(H, W)`` or ``(H, W, 3)``.
    """
    w = np.asarray(weight)
    if w.ndim != 4:
        raise InternalError(f"kernel_grid: expected (F, C, kh, kw) weights, got shape {w.shape}")
    f, c, kh, kw = w.shape
    rgb = c == 3 if rgb is None else bool(rgb)
    if rgb and c != 3:
        raise InternalError(f"kernel_grid: RGB tiles need 3 input channels, got {c}")
    if rgb:
        tiles = _normalise(w.transpose(0, 2, 3, 1), scaling)  # (F, kh, kw, 3)
    else:
        tiles = _normalise(w.reshape(f * c, kh, kw), scaling)
    if rgb or c == 1:
        cols = math.ceil(math.sqrt(f))
        rows = math.ceil(f / cols)
    else:
        rows, cols = f, c
    s = scale if scale is not None else _grid_scale(rows, cols, kh, kw, padding,
                                                    auto_scale(max(kh, kw)))
    return tile_grid(tiles, rows, cols, scale=s, padding=padding)


def feature_map_grid(maps: np.ndarray, *, scale: int | None = None, padding: int = 1) -> np.ndarray:
    """A picture of one sample's activations ``(C, H, W)``: one grey tile per channel,
    each min-max normalised, on a near-square grid (``ceil(sqrt(C))`` columns)."""
    m = np.asarray(maps)
    if m.ndim != 3:
        raise InternalError(f"feature_map_grid: expected (C, H, W), got shape {m.shape}")
    c, h, w = m.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    s = scale if scale is not None else _grid_scale(rows, cols, h, w, padding,
                                                    auto_scale(max(h, w), target=64))
    return tile_grid(_normalise(m, "per_filter"), rows, cols, scale=s, padding=padding)


def image_tile(image: np.ndarray, *, scale: int | None = None) -> np.ndarray:
    """A picture of one input sample ``(C, H, W)``: grey for one channel, RGB for three
    (min-max normalised over all channels, so colours keep their balance), upscaled by
    ``scale`` (default: about 64 px wide), no padding. Other channel counts: channel 0."""
    x = np.asarray(image)
    if x.ndim != 3:
        raise InternalError(f"image_tile: expected (C, H, W), got shape {x.shape}")
    c, h, w = x.shape
    s = scale if scale is not None else auto_scale(max(h, w), target=64)
    pixels = x.transpose(1, 2, 0)[None] if c == 3 else x[:1]  # (1, H, W, 3) or (1, H, W)
    return tile_grid(_normalise(pixels, "per_filter"), 1, 1, scale=s, padding=0)
