"""``load_dataset``: from a ``data:`` config to normalised train / val / test splits.

Pipeline (the same for every dataset):

1. the registered reader returns uint8 pixels with the dataset's official train/test split
   (digits: a fixed-seed split, independent of the run seed);
2. ``data.subset: N`` keeps N training samples, stratified, drawn with the run seed;
3. ``data.val_fraction`` moves that share of the (subset) training samples, stratified and
   drawn with the run seed, into the validation split;
4. pixels become float32 in [0, 1] (divided by 16 for digits, 255 otherwise);
5. ``data.normalize`` computes per-channel mean/std on the *final training split only* and
   applies them to train, val and test, so no validation or test statistics leak into training.

The test split is never subsetted or reshuffled, so test metrics stay comparable across runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from convtrain import validate
from convtrain.data.config import DataOptions, parse_data_config
from convtrain.data.paths import StorageOptions
from convtrain.data.registry import DATASETS
from convtrain.data.splits import (ArraySplit, DataSplits, Normalization, RawDataset, empty_like,
                                   scale_pixels)
from convtrain.data.stratify import stratified_split
from convtrain.errors import ConfigError

# Independent random streams derived from the run seed, so changing data.subset does not
# change which samples the validation split would take from the same pool, and vice versa.
_SUBSET_STREAM = 1
_VAL_STREAM = 2


def load_dataset(cfg: Mapping[str, Any] | Any, *, seed: int) -> DataSplits:
    """Load, split and normalise the dataset described by ``cfg``.

    Args:
        cfg: the ``data:`` mapping (plain dict or OmegaConf ``DictConfig``), see
            :mod:`convtrain.data.config` for keys and defaults.
        seed: the run seed; decides the subset and the validation split (not the test split).

    Returns:
        :class:`DataSplits` with float32 images ``(N, C, H, W)`` and int64 labels ``(N,)``.

    Raises:
        ConfigError: a bad ``data.<key>`` value or an unknown ``data.name``.
        DataError: missing, corrupt or unverifiable dataset files.
    """
    seed = validate.seed(seed)
    config, raw = read_raw_dataset(cfg)
    return prepare_splits(raw, config, seed=seed)


def read_raw_dataset(cfg: Mapping[str, Any] | Any) -> tuple[DataOptions, RawDataset]:
    """Step 1: the checked ``data:`` config and what its registered reader returns (the
    official splits as stored). The one way a ``data:`` config becomes files read."""
    config = parse_data_config(cfg)
    reader = DATASETS.get(config.name, where="data.name")
    return config, reader(StorageOptions(config.name, config.root, config.download, config.mirror))


@dataclasses.dataclass(frozen=True)
class RawSplits:
    """A dataset's train / val / test splits with its pixels as stored (uint8 for the
    built-in datasets) and int64 labels (:func:`load_raw_splits`).

    Attributes:
        train, val, test: images ``(N, C, H, W)`` and labels ``(N,)``; ``val`` may be empty.
        class_names: one name per class, index = label.
        pixel_max: the stored pixel value that maps to 1.0.
        name: the registry name (``data.name``).
    """

    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    class_names: tuple[str, ...]
    pixel_max: float
    name: str

    def split(self, which: str) -> ArraySplit:
        """The split called ``which`` (train, val or test)."""
        if which not in ("train", "val", "test"):
            raise ConfigError(f"split: expected train, val or test, got {which!r}")
        return getattr(self, which)


def load_raw_splits(cfg: Mapping[str, Any] | Any, *, seed: int) -> RawSplits:
    """Steps 1-3 only: the same images in each split as :func:`load_dataset` gives for the
    same ``cfg`` and ``seed``, with the pixels as the dataset stores them (no scaling, no
    normalisation). What a trained model's own preprocessing takes (``task=eval``).

    Raises:
        ConfigError, DataError: as :func:`load_dataset`.
    """
    seed = validate.seed(seed)
    config, raw = read_raw_dataset(cfg)
    train, val = split_train_pool(raw.train, config, seed=seed)
    test = ArraySplit(raw.test.x, raw.test.y.astype(np.int64, copy=False))
    return RawSplits(train=train, val=val, test=test, class_names=tuple(raw.class_names),
                     pixel_max=float(raw.pixel_max), name=config.name)


def split_train_pool(pool: ArraySplit, config: DataOptions, *,
                     seed: int) -> tuple[ArraySplit, ArraySplit]:
    """Steps 2-3 of the module docstring: the official training split (any pixel dtype) ->
    ``(train, val)`` after ``data.subset`` and ``data.val_fraction``; labels as int64."""
    if config.subset is not None:
        if config.subset > len(pool):
            raise ConfigError(
                f"data.subset: {config.subset} exceeds the {len(pool)} training samples of "
                f"'{config.name}'; use null for all of them"
            )
        _, keep = stratified_split(pool.y, config.subset, _stream(seed, _SUBSET_STREAM))
        pool = pool.take(keep)

    n_val = int(round(config.val_fraction * len(pool)))
    if config.val_fraction > 0 and n_val == 0:
        raise ConfigError(
            f"data.val_fraction: {config.val_fraction} of {len(pool)} training samples is an "
            "empty validation split; use 0 to disable validation or a larger fraction"
        )
    if n_val >= len(pool):
        raise ConfigError(
            f"data.val_fraction: {config.val_fraction} of {len(pool)} training samples leaves no "
            "training samples; use a smaller fraction or a larger data.subset"
        )
    if n_val:
        train_idx, val_idx = stratified_split(pool.y, n_val, _stream(seed, _VAL_STREAM))
        train, val = pool.take(train_idx), pool.take(val_idx)
    else:
        train, val = pool, empty_like(pool)
    return (ArraySplit(train.x, train.y.astype(np.int64, copy=False)),
            ArraySplit(val.x, val.y.astype(np.int64, copy=False)))


def prepare_splits(raw: RawDataset, config: DataOptions, *, seed: int) -> DataSplits:
    """Steps 2-5 of the module docstring on an already-read dataset."""
    train, val = split_train_pool(raw.train, config, seed=seed)
    train, val, test = (_to_unit_float(split, raw.pixel_max) for split in (train, val, raw.test))
    channels = train.x.shape[1]
    normalization = (
        Normalization.fit(train.x) if config.normalize else Normalization.identity(channels)
    )
    if config.normalize:
        for split in (train, val, test):
            normalization.apply_(split.x)
    return DataSplits(
        train=train,
        val=val,
        test=test,
        num_classes=len(raw.class_names),
        input_shape=tuple(int(d) for d in train.x.shape[1:]),
        class_names=tuple(raw.class_names),
        name=config.name,
        normalization=normalization,
        subset=config.subset,
        val_fraction=config.val_fraction,
        normalize=config.normalize,
        pixel_max=float(raw.pixel_max),
    )


def _stream(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _to_unit_float(split: ArraySplit, pixel_max: float) -> ArraySplit:
    """uint8 pixels -> a new float32 array in [0, 1], labels -> int64 (one pass each)."""
    x = scale_pixels(split.x, pixel_max)
    return ArraySplit(np.ascontiguousarray(x), split.y.astype(np.int64, copy=False))
