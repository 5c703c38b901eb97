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
    config = parse_data_config(cfg)
    seed = validate.seed(seed)
    reader = DATASETS.get(config.name, where="data.name")
    raw = reader(StorageOptions(config.name, config.root, config.download, config.mirror))
    return prepare_splits(raw, config, seed=seed)


def prepare_splits(raw: RawDataset, config: DataOptions, *, seed: int) -> DataSplits:
    """Steps 2-5 of the module docstring on an already-read dataset."""
    pool = raw.train
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
