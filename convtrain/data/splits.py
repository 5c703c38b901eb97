"""Containers for dataset splits and the normalisation applied to them.

Everything here lives on the host as NumPy arrays; the loader moves batches to the run's
backend. Images are always ``(N, C, H, W)`` and labels ``(N,)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from convtrain.errors import ConfigError, DataError
from convtrain.runtime.backend import to_host

# Samples per chunk when accumulating variance (bounded temporary memory).
_STATS_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class ArraySplit:
    """One split of a dataset.

    Attributes:
        x: images ``(N, C, H, W)``: float32 in a :class:`DataSplits`, uint8 in a
            :class:`RawDataset`.
        y: integer class labels ``(N,)``, int64 in a :class:`DataSplits`.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        # Catch reader bugs here rather than as a shape error deep inside training.
        if self.x.ndim != 4:
            raise ValueError(f"ArraySplit.x must be (N, C, H, W), got shape {self.x.shape}")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise ValueError(
                f"ArraySplit.y must be ({self.x.shape[0]},) to match x, got shape {self.y.shape}"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def take(self, indices: np.ndarray) -> ArraySplit:
        """The samples at ``indices`` (a copy, in the order given)."""
        return ArraySplit(self.x[indices], self.y[indices])


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel affine normalisation ``(x - mean) / std`` applied to every split.

    The statistics are computed on the training split only (after the validation split was
    taken out), so nothing about validation or test images leaks into training. With
    ``data.normalize=false`` this is the identity (mean 0, std 1).

    Attributes:
        mean: one value per channel, in the [0, 1] pixel scale.
        std: one value per channel; a constant channel gets std 1 instead of 0.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def identity(cls, channels: int) -> Normalization:
        return cls(mean=(0.0,) * channels, std=(1.0,) * channels)

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalization:
        """Per-channel mean and population std of ``x`` ``(N, C, H, W)``."""
        if x.shape[0] == 0:
            raise ValueError("cannot compute normalisation statistics of an empty split")
        # Accumulate in float64 (a float32 running sum over ~50M pixels drifts visibly), but
        # square deviations in float32 chunks: x.std(dtype=float64) would allocate a float64
        # copy of the whole split and is ~15x slower on 60k MNIST images.
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
        work_dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        shift = mean.astype(work_dtype).reshape(1, -1, 1, 1)
        squares = np.zeros_like(mean)
        for start in range(0, x.shape[0], _STATS_CHUNK):
            deviation = x[start : start + _STATS_CHUNK] - shift
            deviation *= deviation
            squares += deviation.sum(axis=(0, 2, 3), dtype=np.float64)
        pixels_per_channel = x.shape[0] * x.shape[2] * x.shape[3]
        # The shift is the float32-rounded mean; correct for its tiny offset exactly.
        offset = mean - shift.reshape(-1).astype(np.float64)
        std = np.sqrt(np.maximum(squares / pixels_per_channel - offset**2, 0.0))
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))

    def constants(self, dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, inv_std)`` ``(C,)`` in ``dtype``: :meth:`apply_` subtracts the first and
        multiplies by the second (``1 / std`` rounded once, from float64)."""
        mean = np.asarray(self.mean, dtype=dtype)
        inv_std = (1.0 / np.asarray(self.std, dtype=np.float64)).astype(dtype)
        return mean, inv_std

    def apply_(self, x: np.ndarray) -> np.ndarray:
        """Normalise float ``x`` ``(N, C, H, W)`` in place and return it."""
        mean, inv_std = self.constants(x.dtype)
        x -= mean.reshape(1, -1, 1, 1)
        x *= inv_std.reshape(1, -1, 1, 1)
        return x

    def as_dict(self) -> dict[str, list[float]]:
        """Plain lists, for metrics files and checkpoint metadata."""
        return {"mean": list(self.mean), "std": list(self.std)}


def scale_pixels(raw: Any, pixel_max: float) -> np.ndarray:
    """Raw pixels (uint8 or float, any shape) -> a new float32 array in ``[0, 1]``: one float32
    division by ``pixel_max`` (16 for digits, 255 for 8-bit images). Training and
    :meth:`Preprocessing.apply` both scale with it, so their inputs agree bit for bit."""
    return np.divide(raw, np.float32(pixel_max), dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """From pixels as the dataset stores them to what the model was trained on.

    ``(raw / pixel_max - mean) / std`` per channel: the same float32 operations as
    :func:`convtrain.data.load.load_dataset` (:func:`scale_pixels`, then
    :meth:`Normalization.apply_`), so a model fed ``apply(raw)`` sees exactly the values it saw
    in training. Checkpoints store it (``inputs`` record), so prediction and export reuse the
    training statistics instead of recomputing them; the exported ONNX graph and PyTorch module
    start with the same operations (:meth:`constants`), so every route takes raw pixels
    (float32 ``(N, C, H, W)``, 0..255 for the 8-bit image datasets, 0..16 for digits).

    Attributes:
        pixel_max: the stored pixel value that maps to 1.0 (16 for digits, 255 for 8-bit images).
        mean, std: the training split's per-channel statistics in the [0, 1] scale (tuples of
            floats, whatever sequence was given).

    Raises:
        ConfigError: on construction, a pixel_max that is not positive, means and stds of
            different lengths, or a non-finite mean or non-positive std (a damaged checkpoint).
    """

    pixel_max: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # plain floats (lists and NumPy scalars from JSON or arrays compare equal afterwards)
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "pixel_max", float(self.pixel_max))
        # caught here rather than as garbage logits later
        if not (np.isfinite(self.pixel_max) and self.pixel_max > 0):
            raise ConfigError(f"preprocessing: pixel_max must be a positive number, got "
                              f"{self.pixel_max!r}")
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(f"preprocessing: needs one mean and one std per channel, got mean "
                              f"{list(self.mean)} and std {list(self.std)}")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std))
                and min(self.std) > 0):
            raise ConfigError(f"preprocessing: needs finite means and positive stds, got mean "
                              f"{list(self.mean)}, std {list(self.std)}")

    @classmethod
    def of(cls, pixel_max: float, normalization: Normalization) -> Preprocessing:
        """The preprocessing of a dataset with ``pixel_max`` and the fitted ``normalization``."""
        return cls(pixel_max, normalization.mean, normalization.std)

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def normalization(self) -> Normalization:
        return Normalization(mean=self.mean, std=self.std)

    def apply(self, raw: Any) -> np.ndarray:
        """Raw pixels ``(N, C, H, W)`` (any real dtype, host or device; not modified) -> a new
        host float32 array, normalised exactly as the training images were.

        Raises:
            ConfigError: ``raw`` is not ``(N, C, H, W)`` with this preprocessing's C.
        """
        pixels = to_host(raw)
        if pixels.ndim != 4 or pixels.shape[1] != self.channels:
            raise ConfigError(f"preprocessing: expected raw pixels of shape (N, C={self.channels}, "
                              f"H, W), got {tuple(pixels.shape)}")
        return self.normalization.apply_(scale_pixels(pixels, self.pixel_max))

    def constants(self) -> tuple[np.float32, np.ndarray, np.ndarray]:
        """``(pixel_max, mean, inv_std)`` as float32 (``mean``, ``inv_std``: ``(C,)``):
        :meth:`apply` is ``(raw / pixel_max - mean) * inv_std`` per channel in float32, and an
        exported model that computes the same operations gets the same input bit for bit."""
        return (np.float32(self.pixel_max),) + self.normalization.constants(np.float32)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoint metadata and exported files."""
        return {"pixel_max": self.pixel_max, "mean": list(self.mean), "std": list(self.std)}


@dataclasses.dataclass(frozen=True)
class RawDataset:
    """What a dataset reader returns: undecorated uint8 pixels and the official split.

    Attributes:
        train, test: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``.
        class_names: one name per class, index = label.
        pixel_max: the value that maps to 1.0 (16 for digits, 255 for 8-bit images).
    """

    train: ArraySplit
    test: ArraySplit
    class_names: tuple[str, ...]
    pixel_max: float


@dataclasses.dataclass(frozen=True)
class DataSplits:
    """A dataset ready for training: float32 images scaled to [0, 1] then normalised.

    Attributes:
        train, val, test: the splits; ``val`` may be empty (``data.val_fraction=0``).
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        input_shape: per-sample shape ``(C, H, W)``.
        class_names: one name per class.
        name: the registry name of the dataset (``data.name``).
        normalization: the per-channel mean/std that was applied to all three splits.
        subset, val_fraction, normalize: the ``data.*`` settings that, with the run seed,
            decide which images are in each split (see :meth:`identity`).
        pixel_max: the stored pixel value that maps to 1.0 (see :class:`Preprocessing`).
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    name: str
    normalization: Normalization
    subset: int | None
    val_fraction: float
    normalize: bool
    pixel_max: float = 255.0

    @property
    def preprocessing(self) -> Preprocessing:
        """What turns this dataset's stored pixels into the model's inputs."""
        return Preprocessing(self.pixel_max, self.normalization.mean, self.normalization.std)

    def identity(self) -> dict[str, Any]:
        """The ``data.*`` keys that decide the splits' contents, plus the fitted statistics.

        Checkpoints store it: resuming on other splits would let validation images into
        training (or feed the model inputs on another scale).
        """
        return {"name": self.name, "subset": self.subset, "val_fraction": self.val_fraction,
                "normalize": self.normalize, "normalization": self.normalization.as_dict()}

    def summary(self) -> str:
        """One line for the run log, e.g. ``digits: train 1293, val 144, test 360, (1, 8, 8)``."""
        return (
            f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}, "
            f"input {self.input_shape}, {self.num_classes} classes"
        )


def empty_like(split: ArraySplit, dtype: np.dtype | type | None = None) -> ArraySplit:
    """A zero-length split with the same per-sample shape as ``split``."""
    x_dtype = split.x.dtype if dtype is None else dtype
    return ArraySplit(np.empty((0, *split.x.shape[1:]), dtype=x_dtype), np.empty((0,), np.int64))


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    """Raise :class:`DataError` naming ``source`` for a label outside ``0 .. num_classes-1``."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise DataError(
            f"{source}: found label {int(bad[0])} but this dataset has {num_classes} classes "
            f"(labels 0..{num_classes - 1}); the file is corrupt or belongs to another dataset"
        )
