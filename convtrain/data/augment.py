"""Host-side batch augmentation: random crop after zero padding and horizontal flips.

Augmentation runs on NumPy batches that were already normalised, so the zero padding of
``random_crop`` pads with the per-channel training mean (0 after normalisation), not black.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from convtrain import validate
from convtrain.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """Which augmentations to apply.

    Attributes:
        random_crop: pad each side by this many pixels, then crop a random window of the
            original size (0 disables it). 4 is the classic choice for 32x32 CIFAR images.
        horizontal_flip: mirror each image left-right with probability 1/2.
    """

    random_crop: int = 0
    horizontal_flip: bool = False

    @property
    def active(self) -> bool:
        return self.random_crop > 0 or self.horizontal_flip


_KNOWN_KEYS = tuple(f.name for f in dataclasses.fields(AugmentSpec))


def parse_augment(value: Any, where: str = "data.augment") -> AugmentSpec | None:
    """Validate an augmentation mapping such as ``{random_crop: 4, horizontal_flip: true}``.

    Args:
        value: ``None``, an :class:`AugmentSpec`, or a mapping with the keys above.
        where: the config path used in error messages.

    Returns:
        ``None`` when nothing is to be applied, else the spec.

    Raises:
        ConfigError: naming ``where.<key>`` for unknown keys or bad values.
    """
    if value is None:
        return None
    if isinstance(value, AugmentSpec):
        return value if value.active else None
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping like {{random_crop: 4, horizontal_flip: true}} or null, "
            f"got {value!r}"
        )
    for key in value:
        if key not in _KNOWN_KEYS:
            raise ConfigError(
                f"{where}.{key}: unknown augmentation (known: {', '.join(_KNOWN_KEYS)})"
                f"{validate.did_you_mean(key, _KNOWN_KEYS)}"
            )
    crop = value.get("random_crop", 0)
    if crop is None:
        crop = 0
    crop = validate.integer(f"{where}.random_crop", crop, low=0,
                            expected="a padding in pixels >= 0")
    flip = value.get("horizontal_flip", False)
    if flip is None:
        flip = False
    flip = validate.boolean(f"{where}.horizontal_flip", flip)
    spec = AugmentSpec(random_crop=crop, horizontal_flip=flip)
    return spec if spec.active else None


def check_augment_fits(spec: AugmentSpec | None, image_shape: tuple[int, ...],
                       where: str = "data.augment") -> None:
    """Reject a ``random_crop`` padding of at least the image's height or width.

    Such a padding lets a crop hold no image pixel at all (and most crops mostly padding).

    Raises:
        ConfigError: naming ``where.random_crop`` and the image size.
    """
    if spec is None or spec.random_crop == 0:
        return
    height, width = (int(d) for d in image_shape[-2:])
    if spec.random_crop >= min(height, width):
        raise ConfigError(
            f"{where}.random_crop: {spec.random_crop} pixels of padding on {height}x{width} "
            f"images makes crops that are mostly or only padding; use less than "
            f"{min(height, width)} (a few pixels, e.g. 4 for 32x32 images)"
        )


def augment_batch(x: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """Apply ``spec`` to a host batch.

    Args:
        x: float images ``(B, C, H, W)``; not modified.
        spec: what to apply.
        rng: draws, in this order, the crop offsets ``(B, 2)`` then the flip coins ``(B,)``.

    Returns:
        A new C-contiguous array ``(B, C, H, W)`` of the same dtype.
    """
    batch, channels, height, width = x.shape
    out = x
    if spec.random_crop > 0:
        pad = spec.random_crop
        padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        offsets = rng.integers(0, 2 * pad + 1, size=(batch, 2))
        rows = offsets[:, 0, None] + np.arange(height)  # (B, H)
        cols = offsets[:, 1, None] + np.arange(width)  # (B, W)
        # One gather builds all B crops: (B,1,1,1), (1,C,1,1), (B,1,H,1), (B,1,1,W) broadcast.
        out = padded[
            np.arange(batch)[:, None, None, None],
            np.arange(channels)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if spec.horizontal_flip:
        flip = rng.random(batch) < 0.5
        if out is x:
            out = x.copy()
        out[flip] = out[flip][..., ::-1]
    return np.ascontiguousarray(out)
