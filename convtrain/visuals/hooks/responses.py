"""What each filter responds to (the math: :mod:`convtrain.visuals.responses`). Heavy views:
they run at the end of training, every ``logger.responses_every_n_epochs`` epochs if set, and
in ``task=inspect``; each run logs their cost (``responses: ... s``) in ``convtrain.log``.

For every layer with spatial kernels (convolutions):

- ``activation_max/<layer>``: one cell per filter, labelled ``f<index>`` (the kernel views'
  grid, :func:`~convtrain.visuals.grids.labelled_cells`, fitted to a TensorBoard card), the input
  that maximises the filter's output at the centre of its map after
  ``logger.responses_steps`` steps of regularised gradient ascent
  (:class:`~convtrain.visuals.responses.AscentSettings`), cropped to that unit's receptive
  field (the rest of the image does not reach it), each tile scaled symmetrically (0 = grey);
- ``top_patches/<layer>``: one cell per filter (labelled ``f<index>``, the same grid), its
  ``logger.responses_top_k`` most exciting validation images side by side, best on the left
  (at most :data:`MAX_IMAGES` scanned; the test split without validation data): the crop of the input window (receptive field) of the filter's strongest
  output in each image, all crops on one scale (the scanned images' min..max); pixels of the
  window outside the image (the convolution's zero padding) are drawn in :data:`PADDING`;

and once per run:

- ``attribution/<layer>``: the fixed samples (first test image of each class, in class
  order, :mod:`convtrain.visuals.samples`) in columns; row 1 the image, row 2 its saliency map
  (``max_c |d logit_y / d x_c|``, black = 0 .. white = its 99th percentile), row 3 the Grad-CAM
  map at ``<layer>`` (the last layer with a spatial output) as a heat map over the grey image;
  both for the sample's own class ``y``.

PNG copies: ``<run>/images/<kind>/<layer>_epoch<NNN>.png``. A graph model (layers with several
inputs) gets ``attribution/saliency`` only, the first two rows (the other views need a chain's
inner gradients and windows; a warning in the log says so once).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from convtrain import validate
from convtrain.training.hooks import TrainState
from convtrain.visuals.grids import KERNEL_FRAME_RGB, image_tile, kernel_layout, \
    label_width, labelled_cells, tile_grid
from convtrain.visuals.grids import SEPARATOR as GRID_SEPARATOR
from convtrain.visuals.hook import Option, VisualHook, spatial_kernel_layers
from convtrain.visuals.responses import (AscentSettings, NotAChain, activation_maximisation,
                                         centre_window, crop, grad_cam, grad_cam_layer,
                                         saliency, top_patches)
from convtrain.visuals.samples import fit_scale, fixed_samples

log = logging.getLogger("convtrain")

#: px: the smallest side of a response tile -- a crop or an input pattern of a few pixels must
#: stay recognisable in the full-size view, even when the card then shrinks the grid
MIN_TILE = 16

#: validation images scanned for top patches (the first ones): bounds the cost on big splits
MAX_IMAGES = 2048

#: inferno-like anchors of the heat map, 0 -> 1 (dark purple, red, orange, light yellow)
HEAT = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                np.float64)


#: the colour of top-patch pixels that lie outside the image (padding): a dull blue no grey
#: image contains
PADDING = np.array([40, 60, 120], np.uint8)

#: pixels between the attribution grid's tiles: 2, so that neighbouring tiles stay apart at
#: any zoom, in a colour that no grey tile, heat map (its orange is the grey kernel map's
#: separator) or padding has
SEPARATOR = 2
SEPARATOR_COLOUR = np.array([200, 160, 60], np.uint8)


def laid_out(tiles: np.ndarray, rows: int, cols: int, scale: int) -> np.ndarray:
    """:func:`~convtrain.visuals.grids.tile_grid` with :data:`SEPARATOR` pixels between tiles,
    painted :data:`SEPARATOR_COLOUR`: RGB ``(rows * (h*scale + 2) + 2, cols * (w*scale + 2) + 2,
    3)``."""
    if tiles.ndim == 3:
        tiles = np.repeat(tiles[..., None], 3, axis=3)
    grid = tile_grid(tiles, rows, cols, scale=scale, padding=SEPARATOR)
    th, tw = tiles.shape[1] * scale, tiles.shape[2] * scale
    cell_rows = (np.arange(grid.shape[0]) % (th + SEPARATOR)) < SEPARATOR
    cell_cols = (np.arange(grid.shape[1]) % (tw + SEPARATOR)) < SEPARATOR
    grid[cell_rows[:, None] | cell_cols[None, :]] = SEPARATOR_COLOUR
    return grid


def heat_colours(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] (any shape) -> uint8 RGB ``(..., 3)`` on :data:`HEAT`."""
    v = np.clip(np.asarray(values, np.float64), 0, 1) * (len(HEAT) - 1)
    low = np.minimum(np.floor(v).astype(np.int64), len(HEAT) - 2)
    frac = (v - low)[..., None]
    return np.round(HEAT[low] * (1 - frac) + HEAT[low + 1] * frac).astype(np.uint8)


def _unit(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """min..max over ``axes`` -> 0..1 (constant: 0.5)."""
    lo = x.min(axis=axes, keepdims=True)
    span = x.max(axis=axes, keepdims=True) - lo
    return np.where(span > 0, (x - lo) / np.where(span > 0, span, 1), 0.5)


def _as_rgb_or_grey(unit: np.ndarray) -> np.ndarray:
    """``(N, C, h, w)`` in [0, 1] -> uint8 tiles ``(N, h, w, 3)`` for C = 3, else ``(N, h, w)``
    of channel 0."""
    pixels = unit.transpose(0, 2, 3, 1) if unit.shape[1] == 3 else unit[:, 0]
    return np.round(pixels * 255).astype(np.uint8)


def _filter_cells(tiles: np.ndarray, filters: np.ndarray, colours: int) -> np.ndarray:
    """``tiles`` uint8 ``(F, k, h, w, 3)`` in the house grid of the kernel views
    (:func:`~convtrain.visuals.grids.labelled_cells`): cell ``f`` labelled ``f<index>`` over
    its ``k`` tiles, fitted to a TensorBoard card at the largest integer scale, but tiles of
    at least :data:`MIN_TILE` px and room for the labels (a bigger grid the card shrinks, and
    its full-size button shows whole); separators and bands of the grey map (orange) or, for ``colours == 3``, black."""
    n, k, h, w = tiles.shape[:4]
    texts = [f"f{i}" for i in filters]
    need = math.ceil((max(label_width(t) for t in texts) - (k - 1) * GRID_SEPARATOR) / (k * w))
    layout = kernel_layout(n, k, h, w, labels=1,
                           min_scale=max(1, need, math.ceil(MIN_TILE / max(h, w))))
    s = layout["scale"]
    frame = KERNEL_FRAME_RGB["rgb" if colours == 3 else "grey"]
    return labelled_cells(tiles.repeat(s, axis=2).repeat(s, axis=3), texts, layout, frame)


def _rgb(tiles: np.ndarray) -> np.ndarray:
    return tiles if tiles.ndim == 4 else np.repeat(tiles[..., None], 3, axis=-1)


def activation_max_grid(images: np.ndarray) -> np.ndarray:
    """``(F, C, h, w)`` -> one labelled cell per filter (:func:`_filter_cells`), each tile
    scaled over its channels symmetrically, ``-a..a`` -> ``0..255`` with ``a`` its largest
    ``|x|``: 0 (the data's mean, where the ascent left the input alone) is mid-grey."""
    x = np.asarray(images, np.float64)
    a = np.abs(x).max(axis=(1, 2, 3), keepdims=True)
    unit = np.where(a > 0, (x / np.where(a > 0, a, 1) + 1) / 2, 0.5)
    return _filter_cells(_rgb(_as_rgb_or_grey(unit))[:, None], np.arange(len(x)), x.shape[1])


def top_patches_grid(crops: np.ndarray, inside: np.ndarray, low: float,
                     high: float) -> np.ndarray:
    """``crops`` ``(F, k, C, h, w)`` and ``inside`` ``(F, k, h, w)`` -> one labelled cell per
    filter (:func:`_filter_cells`) holding its k crops side by side, best on the left, RGB:
    all crops on one scale ``low..high``, pixels outside the image in :data:`PADDING`."""
    c = np.asarray(crops, np.float64)
    f, k, ch, h, w = c.shape
    unit = np.clip((c - low) / (high - low), 0, 1) if high > low else np.full(c.shape, 0.5)
    tiles = _rgb(_as_rgb_or_grey(unit.reshape(f * k, ch, h, w))).reshape(f, k, h, w, 3)
    tiles[~np.asarray(inside, bool)] = PADDING
    return _filter_cells(tiles, np.arange(f), ch)


def attribution_grid(x: np.ndarray, saliency_maps: np.ndarray,
                     cams: np.ndarray | None) -> np.ndarray:
    """Samples ``(K, C, H, W)``, saliency ``(K, H, W)``, Grad-CAM ``(K, H, W)`` (both >= 0) -> a
    3 x K RGB grid: images, saliency (grey: 0 .. each map's 99th percentile), Grad-CAM heat
    (:data:`HEAT`: 0 .. each map's max) over the grey image, half and half. Without ``cams``
    (a graph model) the first two rows."""
    images = np.stack([image_tile(img, scale=1) for img in x])  # (K, H, W) or (K, H, W, 3)
    rgb = images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=3)

    def by_top(m: np.ndarray, q: float) -> np.ndarray:
        top = np.percentile(m, q, axis=(1, 2), keepdims=True)
        return np.clip(np.where(top > 0, m / np.where(top > 0, top, 1), 0.0), 0, 1)

    # saliency is sparse: its 99th percentile is white, so a few pixels do not outshine the rest
    sal = np.repeat(np.round(by_top(saliency_maps, 99) * 255).astype(np.uint8)[..., None], 3,
                    axis=3)
    rows = [rgb, sal]
    if cams is not None:
        grey = rgb.astype(np.float64).mean(axis=3, keepdims=True)
        rows.append(np.round(0.5 * grey + 0.5 * heat_colours(by_top(cams, 100)))
                    .astype(np.uint8))
    k, h, w = saliency_maps.shape
    scale = fit_scale(len(rows), k, h, w, max(1, round(64 / max(h, w))), SEPARATOR)
    return laid_out(np.concatenate(rows), len(rows), k, scale)


def _non_negative(key: str, value: Any) -> int:
    return validate.non_negative_int(key, value, zero_means="only at the end")


class Responses(VisualHook):
    place = 27  # after classification (25): the heavy views last among the pictures
    options = (
        Option("responses", True, bool, validate.boolean,
               "activation_max/, top_patches/<conv> and attribution/ at the end of training"),
        Option("responses_every_n_epochs", 0, int, _non_negative,
               "also every N epochs (0: only at the end; heavy: seconds per call)"),
        Option("responses_top_k", 8, int, validate.positive_int,
               "top_patches/<conv>: most exciting validation crops per filter"),
        Option("responses_steps", 64, int, validate.positive_int,
               "activation_max/<conv>: gradient-ascent steps"),
    )

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.logged_step: int | None = None
        self.warned = False

    def on_epoch_end(self, state: TrainState) -> None:
        every = int(self.ctx.settings.responses_every_n_epochs)
        if self.ctx.settings.responses and every > 0 and state.step % every == 0:
            self.log(state, state.step)

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        # the end of training, however many epochs it took (not after a failure or Ctrl-C)
        if (error is None and self.ctx.settings.responses and state.step > state.start_epoch
                and self.logged_step != state.step):
            self.log(state, state.step)

    def inspect(self, state: TrainState, step: int) -> None:
        self.log(state, step)

    def log(self, state: TrainState, step: int) -> None:
        self.logged_step = step
        if not self.ctx.pictures_wanted:
            return
        started = time.perf_counter()
        model, write = state.model, self.ctx.write_image
        layers = spatial_kernel_layers(model)
        images = _scan_images(state.data)
        ascent = AscentSettings(steps=int(self.ctx.settings.responses_steps))
        for name in layers:
            try:
                top, left, size = centre_window(model, name)
                images_max = activation_maximisation(model, name, ascent)
                write("activation_max", name, activation_max_grid(np.stack(
                    [crop(image, top, left, size) for image in images_max])), step)
            except NotAChain as exc:
                self._warn(exc)
            if images is not None:
                try:
                    found = top_patches(model, name, images,
                                        k=int(self.ctx.settings.responses_top_k))
                except NotAChain as exc:
                    self._warn(exc)
                else:
                    write("top_patches", name, top_patches_grid(
                        found.crops, found.inside, float(images.min()), float(images.max())),
                        step)
        samples = fixed_samples(state.data)
        target = grad_cam_layer(model) if layers else None
        if samples is not None and target is not None:
            try:
                cams = grad_cam(model, samples.x, samples.labels, target)[1]
            except NotAChain as exc:
                self._warn(exc)
                cams, target = None, "saliency"
            write("attribution", target, attribution_grid(
                samples.x, saliency(model, samples.x, samples.labels), cams), step)
        log.info("responses: %.2f s at step %d (%d conv layers)",
                 time.perf_counter() - started, step, len(layers))

    def _warn(self, exc: Exception) -> None:
        if not self.warned:
            log.warning("responses: %s", exc)
            self.warned = True


def _scan_images(data: Any) -> np.ndarray | None:
    """The images top patches rank: the first :data:`MAX_IMAGES` of the validation split (else
    of the test split)."""
    for split in ("val", "test"):
        part = getattr(data, split, None)
        if part is not None and len(part) > 0:
            return np.asarray(part.x[:MAX_IMAGES])
    return None
