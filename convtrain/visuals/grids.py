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

import functools
import math
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from convtrain.errors import InternalError

BACKGROUND = 32  # dark grey separates tiles from both black and white weights
MAX_SIDE = 2048  # automatic scales keep big layers' grids (e.g. 64x64 filters) viewable


def auto_scale(kernel_size: int, target: int = 24) -> int:
    """Integer upscale factor that makes a ``kernel_size`` tile about ``target`` pixels wide."""
    return max(1, round(target / max(1, kernel_size)))


def _grid_scale(rows: int, cols: int, h: int, w: int, padding: int, preferred: int) -> int:
    """``preferred``, lowered so the grid fits :data:`MAX_SIDE` (at least 1)."""
    fit_h = ((MAX_SIDE - padding) // max(1, rows) - padding) // max(1, h)
    fit_w = ((MAX_SIDE - padding) // max(1, cols) - padding) // max(1, w)
    return max(1, min(preferred, fit_h, fit_w))


def _normalise(tiles: np.ndarray) -> np.ndarray:
    """Map each tile (first axis) to [0, 255]: its own min..max -> 0..255 (shows the pattern of
    every map, even weak ones; a constant tile is mid-grey)."""
    t = tiles.astype(np.float64)
    axes = tuple(range(1, t.ndim))
    lo = t.min(axis=axes, keepdims=True)
    span = t.max(axis=axes, keepdims=True) - lo
    out = np.where(span > 0, (t - lo) / np.where(span > 0, span, 1), 0.5)
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def tile_grid(tiles: np.ndarray, rows: int, cols: int, *, scale: int = 1,
              padding: int = 1) -> np.ndarray:
    """Lay out ``tiles`` ``(n, h, w)`` or ``(n, h, w, 3)`` (uint8) row-major on a grid."""
    n, h, w = tiles.shape[:3]
    if n > rows * cols:
        raise InternalError(f"{n} tiles do not fit a {rows}x{cols} grid")
    th, tw = h * scale, w * scale
    extra = tiles.shape[3:]
    grid = np.full((rows * (th + padding) + padding, cols * (tw + padding) + padding) + extra,
                   BACKGROUND, np.uint8)
    # one strided write: the grid below and right of the border, seen as (row, tile row,
    # repeat, column, tile column, repeat), takes each tile pixel `scale` x `scale` times
    # (a Python loop over the tiles costs ~1 ms per 500 tiles; repeat-then-copy, 3 passes)
    body = grid[padding:, padding:].reshape((rows, th + padding, cols, tw + padding) + extra)
    cells = body[:, :th, :, :tw].reshape((rows, h, scale, cols, w, scale) + extra)
    full, rest = divmod(n, cols)
    laid = tiles.reshape((n, h, 1, w, 1) + extra)
    cells[:full] = laid[:full * cols].reshape((full, cols, h, 1, w, 1) + extra) \
        .swapaxes(1, 2).swapaxes(2, 3)
    if rest:
        cells[full, :, :, :rest] = laid[full * cols:].swapaxes(0, 1).swapaxes(1, 2)
    return grid


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
    return tile_grid(_normalise(m), rows, cols, scale=s, padding=padding)


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
    return tile_grid(_normalise(pixels), 1, 1, scale=s, padding=0)


# --- kernel views ------------------------------------------------------------------------
#: how a kernel grid maps weights to colours: ``fixed`` (a limit the caller keeps the same
#: every epoch), ``layer`` (max |w| of the layer now), ``per_filter`` (max |w| of each filter,
#: over all its input channels)
KERNEL_SCALINGS = ("fixed", "layer", "per_filter")
#: ``diverging``: -limit blue, 0 white, +limit red; ``grey``: -limit black, 0 mid-grey, +limit
#: white; ``magnitude`` (for |W - W0|, values >= 0): 0 white, limit orange
KERNEL_COLORMAPS = ("diverging", "grey", "magnitude")
NEGATIVE_RGB = (33, 102, 172)    # ColorBrewer RdBu's dark blue
ZERO_RGB = (255, 255, 255)
POSITIVE_RGB = (178, 24, 43)     # ColorBrewer RdBu's dark red
MAGNITUDE_RGB = (217, 72, 1)     # ColorBrewer Oranges' dark orange
#: (separator and label band, label text) per colour map: the separator contrasts with both
#: ends and the middle of its map (black against white, blue, red and orange; orange against
#: black, grey and white)
KERNEL_FRAME_RGB = {"diverging": ((0, 0, 0), (255, 255, 255)),
                    "magnitude": ((0, 0, 0), (255, 255, 255)),
                    "grey": ((255, 140, 0), (0, 0, 0)),
                    "rgb": ((0, 0, 0), (255, 255, 255))}
SEPARATOR = 2      # px between tiles, and between cells of one tile
CELL_GAP = 6       # px between cells of several tiles (and around them): shows which tiles group
LABEL_HEIGHT = 12  # px of a label band (Pillow's default font is 10 px high)
#: px: the image box of a TensorBoard 2.21 Time Series card (measured in Chromium at 1400 and
#: 1920 px wide windows): a picture inside it is shown at its own size, a bigger one shrunk
CARD_WIDTH, CARD_HEIGHT = 367, 215
MAX_TILE = 48      # px: the largest automatic tile


def _ratio(values: np.ndarray, limit: Any) -> np.ndarray:
    """``clip(values / limit, -1, 1)``, 0 where the limit is 0 (float64)."""
    lim = np.asarray(limit, np.float64)
    safe = np.where(lim > 0, lim, 1.0)
    return np.where(lim > 0, np.clip(np.asarray(values, np.float64) / safe, -1.0, 1.0), 0.0)


def kernel_colours(values: np.ndarray, limit: Any, colormap: str) -> np.ndarray:
    """``values`` (any shape) -> uint8 RGB ``values.shape + (3,)``.

    ``v = clip(values / limit, -1, 1)`` (``limit`` broadcasts; a limit of 0 gives v = 0);
    ``diverging``: ``round(white + |v| * (end - white))`` with end = :data:`POSITIVE_RGB` for
    v >= 0 and :data:`NEGATIVE_RGB` below; ``grey``: ``round(127.5 * (1 + v))`` on all three
    channels; ``magnitude``: like ``diverging`` with end :data:`MAGNITUDE_RGB` (``|values|``).
    """
    v = _ratio(values, limit)[..., None]
    zero = np.array(ZERO_RGB, np.float64)
    if colormap == "diverging":
        end = np.where(v >= 0, np.array(POSITIVE_RGB, np.float64), np.array(NEGATIVE_RGB,
                                                                          np.float64))
        out = zero + np.abs(v) * (end - zero)
    elif colormap == "magnitude":
        out = zero + np.abs(v) * (np.array(MAGNITUDE_RGB, np.float64) - zero)
    elif colormap == "grey":
        out = np.repeat(127.5 * (1.0 + v), 3, axis=-1)
    else:
        raise InternalError(f"colormap: expected one of {', '.join(KERNEL_COLORMAPS)}, "
                            f"got {colormap!r}")
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def rgb_colours(values: np.ndarray, limit: Any) -> np.ndarray:
    """Colour tiles ``(..., 3)`` (the last axis: a filter's red, green, blue input weights)
    -> uint8 ``round(127.5 * (1 + clip(values / limit, -1, 1)))``: 0 is mid-grey."""
    return np.round(127.5 * (1.0 + _ratio(values, limit))).astype(np.uint8)


def strongest(norms: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``norms``, largest first (ties: lower index first)."""
    order = np.argsort(-np.asarray(norms, np.float64), kind="stable")
    return order[:n]


@functools.cache
def _default_font() -> Any:
    return ImageFont.load_default()


@functools.lru_cache(maxsize=4096)
def label_mask(text: str) -> np.ndarray:
    """``text`` in Pillow's default font as a coverage mask ``(LABEL_HEIGHT, width)`` in
    [0, 1] (anti-aliased), drawn at (1, 0): the font's glyphs start 2 px below that."""
    font = _default_font()
    width = int(math.ceil(font.getlength(text))) + 2
    canvas = Image.new("L", (width, LABEL_HEIGHT), 0)
    ImageDraw.Draw(canvas).text((1, 0), text, fill=255, font=font)
    mask = np.asarray(canvas, np.float64) / 255.0
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=4096)
def label_width(text: str) -> int:
    """Pixels ``text`` takes in a label: its advance in Pillow's default font, rounded up, plus
    the 1 px margin on its left."""
    return label_mask(text).shape[1] - 1


@functools.lru_cache(maxsize=4096)
def _label_patch(text: str, background: tuple[int, int, int],
                 colour: tuple[int, int, int]) -> np.ndarray:
    """``text`` in ``colour`` on ``background``: uint8 ``(LABEL_HEIGHT, width, 3)``."""
    mask = label_mask(text)[..., None]
    bg = np.array(background, np.float64)
    patch = np.round(bg + mask * (np.array(colour, np.float64) - bg)).astype(np.uint8)
    patch.setflags(write=False)
    return patch


def _draw_label(grid: np.ndarray, y: int, x: int, width: int, text: str,
                frame: tuple[tuple[int, int, int], tuple[int, int, int]]) -> None:
    """Put ``text`` (colours ``frame`` = (band, text)) at ``grid[y:y + LABEL_HEIGHT, x:]``,
    clipped to ``width`` px: the band there is ``frame[0]`` already."""
    patch = _label_patch(text, *frame)[:, :width]
    grid[y:y + LABEL_HEIGHT, x:x + patch.shape[1]] = patch


def kernel_layout(n: int, k: int, kh: int, kw: int, *, labels: int = 1,
                  scale: int | None = None, cols: int | None = None, min_scale: int = 1,
                  box: tuple[int, int] = (CARD_WIDTH, CARD_HEIGHT)) -> dict[str, int]:
    """Geometry of a kernel grid of ``n`` filter cells of ``k`` tiles ``kh x kw`` each.

    A cell is a label band (:data:`LABEL_HEIGHT`) over its ``k`` tiles side by side, plus one
    more band under them when ``labels == 2`` (the channel of each tile). Tiles are upscaled
    by the integer ``scale``; :data:`SEPARATOR` px separate the tiles of a cell, and
    ``gap`` px (:data:`SEPARATOR` when ``k == 1``, else :data:`CELL_GAP`) the cells and the border:

    - ``rows = ceil(n / cols)``, row-major;
    - ``cell_w = k * kw * scale + (k - 1) * SEPARATOR``,
      ``cell_h = labels * LABEL_HEIGHT + kh * scale``;
    - the grid is ``rows * (cell_h + gap) + gap`` high and ``cols * (cell_w + gap) + gap``
      wide; cell ``i`` starts at ``(gap + r * (cell_h + gap), gap + c * (cell_w + gap))``, its
      label band first, then tile ``j`` at ``j * (kw * scale + SEPARATOR)`` to the right of the
      cell's left edge.

    Automatic (``scale`` and/or ``cols`` None): the columns are chosen among those that leave
    no row empty (``cols == ceil(n / ceil(n / cols))``). The scale is the largest integer at
    which the grid fits ``box`` (width, height: a TensorBoard card) with tiles of at most
    :data:`MAX_TILE` px; the columns are those that allow the largest such scale (then the
    fewest empty cells, then the most columns). When not even ``min_scale`` (what the labels
    need) fits, or the scale is given, the columns are those that overflow the box least (the
    larger of width / box width and height / box height; then the most columns).
    """
    gap = SEPARATOR if k == 1 else CELL_GAP

    def size(columns: int, s: int) -> tuple[int, int]:
        rows = math.ceil(n / columns)
        return (columns * (k * kw * s + (k - 1) * SEPARATOR + gap) + gap,
                rows * (labels * LABEL_HEIGHT + kh * s + gap) + gap)

    def largest_scale(columns: int) -> int:
        rows = math.ceil(n / columns)
        by_width = (box[0] - gap - columns * (gap + (k - 1) * SEPARATOR)) // (columns * k * kw)
        by_height = (box[1] - gap - rows * (gap + labels * LABEL_HEIGHT)) // (rows * kh)
        return min(by_width, by_height, MAX_TILE // max(kh, kw))

    if cols is None:
        candidates = [c for c in range(1, n + 1) if math.ceil(n / math.ceil(n / c)) == c]
        if scale is None:
            best = max(largest_scale(c) for c in candidates)
            if best >= min_scale:
                cols = min((c for c in candidates if largest_scale(c) == best),
                           key=lambda c: (c * math.ceil(n / c), -c))
                scale = best
            else:
                scale = min_scale
        if cols is None:
            cols = min(candidates, key=lambda c: (max(size(c, scale)[0] / box[0],
                                                      size(c, scale)[1] / box[1]), -c))
    elif scale is None:
        scale = max(min_scale, largest_scale(cols))
    rows = math.ceil(n / cols)
    width, height = size(cols, scale)
    return {"rows": rows, "cols": cols, "scale": scale, "gap": gap,
            "cell_w": k * kw * scale + (k - 1) * SEPARATOR,
            "cell_h": labels * LABEL_HEIGHT + kh * scale, "height": height, "width": width}


def kernel_grid(weight: np.ndarray, *, scaling: str = "layer", limit: float | None = None,
                colormap: str = "diverging", rgb: bool | None = None, max_filters: int = 32,
                top_channels: int = 2, scale: int | None = None,
                cols: int | None = None) -> np.ndarray:
    """A picture of a conv layer's filters: uint8 RGB ``(H, W, 3)``.

    ``weight`` ``(F, C, kh, kw)`` (for ``colormap="magnitude"``, e.g. ``W - W0``: its absolute
    value is drawn).

    What is shown: at most ``max_filters`` filters, those of largest L2 norm (all of them
    when ``F <= max_filters``), in filter order, each in a cell labelled ``f<index>``. A cell
    holds one tile per shown input channel: for ``C == 1`` the filter itself; in RGB mode
    (``rgb=True``; ``None`` means ``C == 3``, right for a first layer reading an RGB image) one
    colour tile, channel c -> colour c, ``round(127.5 * (1 + v))``; otherwise its channels in
    order when ``C <= top_channels``, else its ``top_channels`` channels of largest L2 norm,
    strongest first, each labelled ``c<index>`` in a band under the tiles.

    Colour: ``v = w / limit`` clipped to [-1, 1] (:func:`kernel_colours`), where ``limit`` is
    the given one (``scaling="fixed"``), max |w| of the layer (``layer``), or max |w| of each
    filter over all its input channels (``per_filter``).

    Geometry: :func:`kernel_layout` (``labels`` = 2 with channel labels, else 1; ``scale`` and
    ``cols`` None: fitted to a TensorBoard card, at least as large as the labels need); the
    separator and label bands are :data:`KERNEL_FRAME_RGB` of the colour map.
    """
    w = np.asarray(weight, np.float64)
    if w.ndim != 4:
        raise InternalError(f"kernel_grid: expected (F, C, kh, kw) weights, got shape {w.shape}")
    if colormap not in KERNEL_COLORMAPS:
        raise InternalError(f"colormap: expected one of {', '.join(KERNEL_COLORMAPS)}, "
                            f"got {colormap!r}")
    if colormap == "magnitude":
        w = np.abs(w)
    f, c, kh, kw = w.shape
    rgb = (c == 3 and colormap != "magnitude") if rgb is None else bool(rgb)
    if rgb and c != 3:
        raise InternalError(f"kernel_grid: RGB tiles need 3 input channels, got {c}")
    if rgb and colormap == "magnitude":
        raise InternalError("kernel_grid: magnitudes are drawn per channel, not as RGB tiles")
    if max_filters < 1 or top_channels < 1:
        raise InternalError(f"kernel_grid: max_filters and top_channels must be >= 1, got "
                            f"{max_filters} and {top_channels}")

    if scaling == "fixed":
        if limit is None or not limit >= 0:
            raise InternalError(f"kernel_grid: fixed scaling needs a limit >= 0, got {limit!r}")
        limits = np.full(f, float(limit))
    elif scaling == "layer":
        limits = np.full(f, np.abs(w).max() if w.size else 0.0)
    elif scaling == "per_filter":
        limits = np.abs(w).reshape(f, -1).max(axis=1)
    else:
        raise InternalError(f"scaling: expected one of {', '.join(KERNEL_SCALINGS)}, "
                            f"got {scaling!r}")

    filters = np.sort(strongest(np.linalg.norm(w.reshape(f, -1), axis=1), max_filters))
    n = len(filters)
    if rgb or c == 1:
        channels = np.zeros((n, 1), np.intp)  # one tile per filter
    elif c <= top_channels:
        channels = np.broadcast_to(np.arange(c), (n, c))
    else:
        channel_norms = np.linalg.norm(w[filters].reshape(n, c, -1), axis=2)
        channels = np.stack([strongest(row, top_channels) for row in channel_norms])
    k = channels.shape[1]
    channel_labels = not rgb and c > top_channels
    labels = 2 if channel_labels else 1

    # an automatic scale leaves room for the widest label: a cell for its filter index, a
    # tile for its channel index
    texts = [f"f{i}" for i in filters]
    need = math.ceil((max(label_width(t) for t in texts) - (k - 1) * SEPARATOR) / (k * kw))
    if channel_labels:
        need = max(need, math.ceil(max(label_width(f"c{i}") for i in range(c)) / kw))
    layout = kernel_layout(n, k, kh, kw, labels=labels, scale=scale, cols=cols,
                           min_scale=max(1, need))
    s = layout["scale"]

    if rgb:
        tiles = rgb_colours(w[filters].transpose(0, 2, 3, 1),
                            limits[filters][:, None, None, None])[:, None]
        frame = KERNEL_FRAME_RGB["rgb"]
    else:
        chosen = w[filters[:, None], channels]  # (n, k, kh, kw)
        tiles = kernel_colours(chosen, limits[filters][:, None, None, None], colormap)
        frame = KERNEL_FRAME_RGB[colormap]
    # (n, k, kh, kw, 3) -> upscaled (n, k, th, tw, 3)
    tiles = tiles.repeat(s, axis=2).repeat(s, axis=3)
    tile_texts = [[f"c{j}" for j in row] for row in channels] if channel_labels else None
    return labelled_cells(tiles, texts, layout, frame, tile_texts)


@functools.lru_cache(maxsize=32)
def _labelled_frame(texts: tuple[str, ...], tile_texts: tuple[tuple[str, ...], ...] | None,
                    n: int, k: int, th: int, tw: int, layout_items: tuple[tuple[str, int], ...],
                    frame: tuple[tuple[int, int, int], tuple[int, int, int]]) -> np.ndarray:
    """The cells of :func:`labelled_cells` without their tiles (band colour there), read-only:
    ``(rows * cols, cell_h + gap, cell_w + gap, 3)``."""
    layout = dict(layout_items)
    gap, cell_w, cell_h = (layout[key] for key in ("gap", "cell_w", "cell_h"))
    cells = np.empty((layout["rows"] * layout["cols"], cell_h + gap, cell_w + gap, 3), np.uint8)
    cells[...] = frame[0]
    for i in range(n):
        _draw_label(cells[i], 0, 0, cell_w, texts[i], frame)
        if tile_texts is not None:
            for j in range(k):
                _draw_label(cells[i], LABEL_HEIGHT + th, j * (tw + SEPARATOR), tw,
                            tile_texts[i][j], frame)
    cells.setflags(write=False)
    return cells


def labelled_cells(tiles: np.ndarray, texts: list[str], layout: dict[str, int],
                   frame: tuple[tuple[int, int, int], tuple[int, int, int]],
                   tile_texts: list[list[str]] | None = None) -> np.ndarray:
    """The house grid of labelled cells (the kernel views' and the response views'):
    ``tiles`` uint8 ``(n, k, th, tw, 3)``, already upscaled by ``layout["scale"]``, cell ``i``
    labelled ``texts[i]`` in a band above its ``k`` tiles (and tile ``j`` ``tile_texts[i][j]``
    under it, when given: ``layout`` from :func:`kernel_layout` with ``labels=2``), laid out as
    :func:`kernel_layout` documents; separators and label bands ``frame[0]``, text ``frame[1]``.
    uint8 ``(layout["height"], layout["width"], 3)``."""
    n, k, th, tw = tiles.shape[:4]
    gap, cell_w, cell_h = (layout[key] for key in ("gap", "cell_w", "cell_h"))
    rows, cols = layout["rows"], layout["cols"]
    # the cells' bands and labels, drawn once for the epochs that show the same filters
    cells = _labelled_frame(tuple(texts), None if tile_texts is None else
                            tuple(tuple(row) for row in tile_texts), n, k, th, tw,
                            tuple(sorted(layout.items())), frame).copy()
    for j in range(k):  # each tile column at once
        x = j * (tw + SEPARATOR)
        cells[:n, LABEL_HEIGHT:LABEL_HEIGHT + th, x:x + tw] = tiles[:, j]
    # one reshape lays the cells (each with its right and bottom gap) out row-major, as
    # tile_grid does
    grid = np.empty((layout["height"], layout["width"], 3), np.uint8)
    grid[:gap] = frame[0]
    grid[:, :gap] = frame[0]
    grid[gap:, gap:] = cells.reshape(rows, cols, cell_h + gap, cell_w + gap, 3).swapaxes(1, 2) \
        .reshape(rows * (cell_h + gap), cols * (cell_w + gap), 3)
    return grid
