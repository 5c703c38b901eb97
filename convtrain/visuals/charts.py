"""Pictures with words in them, in Pillow's default font: the confusion matrix (shared by
``task=eval``'s ``confusion_matrix.png`` and TensorBoard's ``classification/confusion_matrix``),
the per-class accuracy bars and a grid of labelled example images (the misclassified
validation images).
The confusion matrix, drawn every few epochs with ~100 numbers, stamps cached glyph masks with
NumPy (:func:`_stamp`); the others draw with Pillow.

Each drawing has a layout function that says where everything goes, in pixels, so tests (and
readers) can find a cell, a bar or a tile from the formula instead of from the picture.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import numpy as np

from convtrain.errors import InternalError
from convtrain.visuals.grids import label_mask

def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts ``(K, K)`` int64: ``[i, j]`` = images of true class i predicted as j."""
    flat = labels.astype(np.int64) * num_classes + predictions.astype(np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


#: the colour of a cell whose row share is 1 (share 0 is white; linear in between)
_FULL = np.array((8, 48, 107), dtype=np.float64)


def cell_colours(shares: np.ndarray) -> np.ndarray:
    """White (share 0) to dark blue (share 1), linear per RGB channel: uint8 ``shares.shape +
    (3,)``."""
    rgb = 255.0 + (_FULL - 255.0) * np.clip(shares, 0.0, 1.0)[..., None]
    return np.round(rgb).astype(np.uint8)


def cell_size(num_classes: int) -> int:
    """Pixels per cell side: 40 for up to 12 classes, smaller (at least 4) for more."""
    return max(4, min(40, 480 // max(num_classes, 1)))


@dataclasses.dataclass(frozen=True)
class MatrixLayout:
    """Where :func:`render_confusion_matrix` puts things (pixels): cell ``(i, j)`` covers
    ``[left + j * cell, left + (j + 1) * cell)`` x ``[top + i * cell, top + (i + 1) * cell)``."""

    left: int
    top: int
    cell: int
    width: int
    height: int
    line: int  # height of a line of text
    label_every: int  # class indices written on the axes: every n-th


@functools.lru_cache(maxsize=1)
def _font_and_measure() -> tuple[Any, Any]:
    """Pillow's default font and a (cached) text measurer: loading the font and measuring
    cost ~10 ms per picture otherwise, a visual drawn every few epochs pays it once."""
    from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415 - only the PNG needs Pillow

    font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    @functools.lru_cache(maxsize=4096)
    def text_size(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font)
        return int(right - left), int(bottom - top)

    return font, text_size


def matrix_layout(num_classes: int, title: str = "") -> MatrixLayout:
    """The geometry of the picture of a ``(K, K)`` matrix with ``title``."""
    _, text_size = _font_and_measure()
    k = num_classes
    cell = cell_size(k)
    line = text_size("0123456789predictedtrue")[1] + 4
    index_width = max(text_size(str(i))[0] for i in range(k))
    label_every = 1 if index_width + 4 <= cell else -(-(index_width + 4) // cell)
    left = line + index_width + 8
    top = (line if title else 0) + 2 * line
    width = max(left + k * cell + 8, text_size(title)[0] + 16 if title else 0)
    return MatrixLayout(left=left, top=top, cell=cell, width=width, height=top + k * cell + 8,
                        line=line, label_every=label_every)


def _stamp(canvas: np.ndarray, x: float, y: float, text: str,
           ink: tuple[int, int, int], *, cached: bool = True) -> None:
    """Write ``text`` in ``ink`` onto ``canvas`` (uint8 ``(H, W, 3)``, in place) where
    ``ImageDraw.text((x, y), text)`` puts it, blending the glyphs' coverage mask into what is
    there: a picture of ~100 numbers drawn every few epochs, where Pillow would render each
    string again (~40 us) it costs ~5 us. Whole pixels, rounded as Pillow rounds a
    fractional position (x halves up, y halves down). ``cached=False`` for a text that will
    not come again (a title naming the epoch): the mask cache keeps only recurring ones."""
    # the text drawn at (1, 0)
    mask = label_mask(text) if cached else label_mask.__wrapped__(text)
    x0, y0 = math.floor(x + 0.5) - 1, math.ceil(y - 0.5)
    top, left = max(y0, 0), max(x0, 0)
    bottom = min(y0 + mask.shape[0], canvas.shape[0])
    right = min(x0 + mask.shape[1], canvas.shape[1])
    if bottom <= top or right <= left:
        return
    cover = mask[top - y0:bottom - y0, left - x0:right - x0, None]
    region = canvas[top:bottom, left:right].astype(np.float64)
    canvas[top:bottom, left:right] = np.round(
        region + cover * (np.asarray(ink, np.float64) - region)).astype(np.uint8)


def render_confusion_matrix(cm: np.ndarray, title: str = "") -> Any:
    """A ``PIL.Image`` of the counts ``(K, K)``: each cell an integer-sized square, coloured by
    its share of the row (white 0 .. dark blue 1, so each row shows where a class's images went,
    whatever the class sizes), with the count written in it when it fits; class indices on both
    axes (rows: true class, columns: predicted). Geometry: :func:`matrix_layout`."""
    from PIL import Image  # noqa: PLC0415 - only the PNG needs Pillow

    k = int(cm.shape[0])
    _, text_size = _font_and_measure()
    layout = matrix_layout(k, title)
    cell, left, top = layout.cell, layout.left, layout.top
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    black, white = (0, 0, 0), (255, 255, 255)
    top0 = layout.line if title else 0
    if title:
        _stamp(canvas, 8, 2, title, black, cached=False)
    _stamp(canvas, left, top0, "predicted", black)
    rows = cm.sum(axis=1)
    shares = np.divide(cm, rows[:, None], out=np.zeros(cm.shape), where=rows[:, None] > 0)
    canvas[top:top + k * cell, left:left + k * cell] = \
        cell_colours(shares).repeat(cell, axis=0).repeat(cell, axis=1)
    for i, j in zip(*np.nonzero(cm)):
        text = str(int(cm[i, j]))
        tw, th = text_size(text)
        if tw + 4 <= cell and th + 4 <= cell:
            x0, y0 = left + j * cell, top + i * cell
            _stamp(canvas, x0 + (cell - tw) / 2, y0 + (cell - th) / 2 - 1, text,
                   white if shares[i, j] > 0.5 else black)
    for i in range(0, k, layout.label_every):
        tw, th = text_size(str(i))
        centre = i * cell + cell // 2
        _stamp(canvas, left + centre - tw / 2, top0 + layout.line, str(i), black)
        _stamp(canvas, left - 6 - tw, top + centre - th / 2 - 1, str(i), black)
    # "true", written upwards along the left edge
    label = np.full((layout.line, text_size("true")[0] + 2, 3), 255, np.uint8)
    _stamp(label, 0, 0, "true", black)
    upwards = np.rot90(label)
    canvas[top:top + upwards.shape[0], 2:2 + upwards.shape[1]] = \
        upwards[:max(0, min(upwards.shape[0], layout.height - top))]
    grey = (128, 128, 128)  # the outline, 1 px outside the cells
    x1, y1 = left + k * cell, top + k * cell
    canvas[top - 1, left - 1:x1 + 1] = canvas[y1, left - 1:x1 + 1] = grey
    canvas[top - 1:y1 + 1, left - 1] = canvas[top - 1:y1 + 1, x1] = grey
    return Image.fromarray(canvas)




# --- per-class accuracy as horizontal bars ---------------------------------------------------

#: pixels of a bar whose accuracy is 1 (0 draws none; linear in between)
BAR_LENGTH = 240
#: the bars' colour (the confusion matrix's "all of the row")
BAR_COLOUR = tuple(int(c) for c in _FULL)


@dataclasses.dataclass(frozen=True)
class BarLayout:
    """Where :func:`render_per_class_bars` puts things (pixels): class ``k``'s bar covers
    ``x in [left, left + round(accuracy_k * BAR_LENGTH))``, ``y in [top + k * row + 2,
    top + (k + 1) * row - 2)``; its label ends left of ``left``, its value starts after the
    longest bar."""

    left: int
    top: int
    row: int
    width: int
    height: int


def bar_layout(class_names: Sequence[str], title: str = "") -> BarLayout:
    _, text_size = _font_and_measure()
    line = text_size("0123456789Ag")[1] + 4
    row = line + 4
    label_width = max(text_size(_bar_label(k, name))[0] for k, name in enumerate(class_names))
    left = 8 + label_width + 8
    top = (line + 4) if title else 4
    width = max(left + BAR_LENGTH + 8 + text_size("1.000 (99999)")[0] + 8,
                text_size(title)[0] + 16 if title else 0)
    return BarLayout(left=left, top=top, row=row, width=width,
                     height=top + len(class_names) * row + 4)


def _bar_label(k: int, name: str) -> str:
    return str(k) if name == str(k) else f"{k} {name}"


def render_per_class_bars(accuracy: np.ndarray, support: np.ndarray,
                          class_names: Sequence[str], title: str = "") -> Any:
    """A ``PIL.Image``: one horizontal bar per class, its length the class's accuracy (the
    share of its images classified correctly) on a fixed scale (:data:`BAR_LENGTH` px = 1), so
    pictures of different epochs compare; the value and the class's image count beside it
    (``-`` for a class without images). A thin grey line marks 1.0. Geometry:
    :func:`bar_layout`."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    accuracy = np.asarray(accuracy, dtype=np.float64)
    if accuracy.shape != (len(class_names),) or np.shape(support) != accuracy.shape:
        raise InternalError(f"per-class bars: {accuracy.shape} accuracies, "
                            f"{np.shape(support)} supports for {len(class_names)} classes")
    font, text_size = _font_and_measure()
    layout = bar_layout(class_names, title)
    image = Image.new("RGB", (layout.width, layout.height), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((8, 2), title, fill="black", font=font)
    end = layout.left + BAR_LENGTH
    draw.line((end, layout.top, end, layout.top + len(class_names) * layout.row - 1),
              fill=(190, 190, 190))
    for k, name in enumerate(class_names):
        y0 = layout.top + k * layout.row
        label = _bar_label(k, name)
        tw, th = text_size(label)
        draw.text((layout.left - 8 - tw, y0 + (layout.row - th) / 2 - 1), label, fill="black",
                  font=font)
        value = accuracy[k]
        if np.isnan(value):
            text = "-"
        else:
            length = int(round(min(max(value, 0.0), 1.0) * BAR_LENGTH))
            if length > 0:
                draw.rectangle((layout.left, y0 + 2, layout.left + length - 1,
                                y0 + layout.row - 3), fill=BAR_COLOUR)
            text = f"{value:.3f} ({int(support[k])})"
        draw.text((end + 8, y0 + (layout.row - th) / 2 - 1), text, fill="black", font=font)
    return image


# --- labelled example images -----------------------------------------------------------------

#: grid of labelled images: gap between cells and around the grid, the narrowest cell and the
#: widest caption (longer ones are cut)
LABEL_GAP = 6
MIN_CELL_WIDTH = 64
MAX_CAPTION_WIDTH = 132
#: colours of the caption lines: the true class in black, the prediction in red
TRUE_INK, PREDICTED_INK = (0, 0, 0), (200, 0, 0)


@dataclasses.dataclass(frozen=True)
class LabelledGridLayout:
    """Where :func:`render_labelled_grid` puts things (pixels): image ``i`` sits in cell
    ``(r, c) = divmod(i, columns)``, whose top-left corner is ``(x, y) = (gap + c * (cell_width
    + gap), gap + r * (cell_height + gap))``; the image (``tile`` x ``tile_height`` px) is
    centred horizontally at the top of its cell and the caption's lines follow it."""

    columns: int
    rows: int
    scale: int
    tile_width: int
    tile_height: int
    cell_width: int
    cell_height: int
    line: int
    width: int
    height: int

    def image_origin(self, i: int) -> tuple[int, int]:
        """``(x, y)`` of image ``i``'s top-left pixel."""
        r, c = divmod(i, self.columns)
        return (LABEL_GAP + c * (self.cell_width + LABEL_GAP)
                + (self.cell_width - self.tile_width) // 2,
                LABEL_GAP + r * (self.cell_height + LABEL_GAP))


def caption_width(captions: Sequence[Sequence[str]]) -> int:
    """Pixels of the widest caption line, at most :data:`MAX_CAPTION_WIDTH`."""
    _, text_size = _font_and_measure()
    return min(MAX_CAPTION_WIDTH, max((text_size(t)[0] for c in captions for t in c),
                                      default=0))


def labelled_grid_layout(count: int, height: int, width: int, lines: int, *, columns: int = 8,
                         scale: int | None = None, text_width: int = 0) -> LabelledGridLayout:
    """``count`` images of ``height`` x ``width`` pixels with ``lines`` caption lines each, at
    most ``text_width`` pixels wide (:func:`caption_width`); ``scale`` default: about 56 px per
    image side (integer, nearest neighbour). A cell is as wide as the widest of its image,
    its caption and :data:`MIN_CELL_WIDTH`."""
    _, text_size = _font_and_measure()
    s = scale if scale is not None else max(1, round(56 / max(height, width, 1)))
    line = text_size("0123456789Ag")[1] + 3
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    tile_w, tile_h = width * s, height * s
    cell_w = max(tile_w, MIN_CELL_WIDTH, text_width)
    cell_h = tile_h + 2 + lines * line
    return LabelledGridLayout(columns=columns, rows=rows, scale=s, tile_width=tile_w,
                              tile_height=tile_h, cell_width=cell_w, cell_height=cell_h,
                              line=line, width=LABEL_GAP + columns * (cell_w + LABEL_GAP),
                              height=LABEL_GAP + rows * (cell_h + LABEL_GAP))


def display_pixels(images: np.ndarray) -> np.ndarray:
    """Images ``(N, C, H, W)`` (any scale) -> uint8 ``(N, H, W, 3)``: each image min-max
    stretched to 0..255 on its own (over all its channels, so colours keep their balance);
    one channel is drawn grey, three as RGB, any other count by its first channel."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise InternalError(f"display_pixels: expected (N, C, H, W), got shape {x.shape}")
    x = x if x.shape[1] == 3 else np.repeat(x[:, :1], 3, axis=1)
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    span = x.max(axis=(1, 2, 3), keepdims=True) - lo
    out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0.5)
    return np.round(out * 255).astype(np.uint8).transpose(0, 2, 3, 1)


def _fit(text: str, width: int, text_size: Any) -> str:
    """``text``, cut and ended with an ellipsis where it is wider than ``width`` pixels."""
    if text_size(text)[0] <= width:
        return text
    while text and text_size(text + "…")[0] > width:
        text = text[:-1]
    return text + "…"


def render_labelled_grid(images: np.ndarray, captions: Sequence[Sequence[str]], *,
                         columns: int = 8, scale: int | None = None) -> Any:
    """A ``PIL.Image`` of images ``(N, C, H, W)`` (drawn by :func:`display_pixels`) on a white
    grid, each with its caption lines under it: the first line black, the others red (for the
    misclassified images: ``true: <name>``, ``pred: <name>``); text wider than the cell is cut
    with an ellipsis. Geometry: :func:`labelled_grid_layout`."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    pixels = display_pixels(images)
    n, h, w = pixels.shape[:3]
    if len(captions) != n or n == 0:
        raise InternalError(f"labelled grid: {n} images and {len(captions)} captions")
    lines = max(len(c) for c in captions)
    font, text_size = _font_and_measure()
    layout = labelled_grid_layout(n, h, w, lines, columns=columns, scale=scale,
                                  text_width=caption_width(captions))
    s = layout.scale
    canvas = np.full((layout.height, layout.width, 3), 255, np.uint8)
    for i in range(n):
        x, y = layout.image_origin(i)
        canvas[y:y + layout.tile_height, x:x + layout.tile_width] = \
            pixels[i].repeat(s, axis=0).repeat(s, axis=1)
    image = Image.fromarray(canvas, "RGB")
    draw = ImageDraw.Draw(image)
    for i, caption in enumerate(captions):
        r, c = divmod(i, layout.columns)
        x0 = LABEL_GAP + c * (layout.cell_width + LABEL_GAP)
        y = LABEL_GAP + r * (layout.cell_height + LABEL_GAP) + layout.tile_height + 2
        for j, text in enumerate(caption):
            draw.text((x0, y + j * layout.line), _fit(text, layout.cell_width, text_size),
                      fill=TRUE_INK if j == 0 else PREDICTED_INK, font=font)
    return image


def render_message(text: str) -> Any:
    """A small white ``PIL.Image`` saying ``text`` (a view with nothing to show says so)."""
    from PIL import Image, ImageDraw  # noqa: PLC0415

    font, text_size = _font_and_measure()
    tw, th = text_size(text)
    image = Image.new("RGB", (tw + 16, th + 16), "white")
    ImageDraw.Draw(image).text((8, 6), text, fill="black", font=font)
    return image
