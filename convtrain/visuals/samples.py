"""The fixed sample images every run shows: the first test image of each class.

The test split is the dataset's official one, never drawn with the seed (``data.subset`` and
``data.val_fraction`` only touch the training pool), so every run and every job of a sweep on
the same dataset shows the same images, in class order -- a ``seed=1,2`` sweep compares like
with like. A dataset without a test split falls back to the validation split, then to the
training split (those depend on the seed; the log of such a run says which split it used).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from convtrain.errors import InternalError
from convtrain.visuals.grids import MAX_SIDE, auto_scale, image_tile, tile_grid

#: at most this many samples (the first classes), so the sample views stay readable
MAX_SAMPLES = 10


@dataclasses.dataclass(frozen=True)
class Samples:
    """Attributes:
        x: ``(K, C, H, W)`` images as the model takes them (host).
        labels: ``(K,)`` their classes, ascending.
        indices: ``(K,)`` their positions in ``split``.
        split: which split they come from (``"test"``, ``"val"`` or ``"train"``).
    """

    x: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    split: str

    def __len__(self) -> int:
        return int(len(self.labels))


def first_of_each_class(labels: np.ndarray, limit: int = MAX_SAMPLES) -> np.ndarray:
    """The index of the first occurrence of each class present in ``labels``, by class,
    the first ``limit`` classes."""
    labels = np.asarray(labels)
    classes, first = np.unique(labels, return_index=True)  # classes ascending
    return first[:limit].astype(np.int64)


def fixed_samples(data: Any, limit: int = MAX_SAMPLES) -> Samples | None:
    """The first image of each class of ``data.test`` (else ``data.val``, else ``data.train``);
    None when every split is empty."""
    for split in ("test", "val", "train"):
        part = getattr(data, split, None)
        if part is not None and len(part) > 0:
            index = first_of_each_class(np.asarray(part.y), limit)
            return Samples(np.array(np.asarray(part.x)[index], copy=True),
                           np.asarray(part.y)[index].astype(np.int64), index, split)
    return None


def samples_row(x: np.ndarray, *, scale: int | None = None) -> np.ndarray:
    """The samples ``(K, C, H, W)`` side by side in one row, each min-max normalised over its
    channels (grey for one channel, RGB for three, else channel 0), upscaled like
    :func:`convtrain.visuals.grids.image_tile` (about 64 px). ``(H', W')`` or ``(H', W', 3)``
    uint8."""
    tiles = np.stack([image_tile(image, scale=scale) for image in np.asarray(x)])
    return tile_grid(tiles, 1, len(tiles))


def feature_maps_by_sample(maps: np.ndarray, *, scale: int | None = None) -> np.ndarray:
    """One layer's outputs for the samples, ``(K, F, h, w)``: row ``i`` = sample ``i``, column
    ``f`` = channel ``f``. Each channel (column) is min-max normalised over all samples
    together, so a brighter tile means a stronger response than in the other samples.
    uint8 ``(H', W')``."""
    m = np.asarray(maps, dtype=np.float64)
    if m.ndim != 4:
        raise InternalError(f"feature_maps_by_sample: expected (K, F, h, w), got {m.shape}")
    k, f, h, w = m.shape
    lo = m.min(axis=(0, 2, 3), keepdims=True)
    span = m.max(axis=(0, 2, 3), keepdims=True) - lo
    unit = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), 0.5)
    tiles = np.clip(np.round(unit * 255), 0, 255).astype(np.uint8).reshape(k * f, h, w)
    s = scale if scale is not None else fit_scale(k, f, h, w, auto_scale(max(h, w), 32))
    return tile_grid(tiles, k, f, scale=s)


def fit_scale(rows: int, cols: int, h: int, w: int, preferred: int, padding: int = 1) -> int:
    """``preferred``, lowered (not below 1) so a ``rows x cols`` grid of ``h x w`` tiles stays
    within :data:`convtrain.visuals.grids.MAX_SIDE` pixels."""
    fit_h = ((MAX_SIDE - padding) // max(1, rows) - padding) // max(1, h)
    fit_w = ((MAX_SIDE - padding) // max(1, cols) - padding) // max(1, w)
    return max(1, min(preferred, fit_h, fit_w))
