"""The dataset registry: ``data.name`` -> a reader returning a :class:`RawDataset`.

A reader is a callable ``reader(options: StorageOptions) -> RawDataset`` that finds (and, when
``options.download`` is set, fetches) its files, validates them and returns uint8 pixels with
the official train/test split. Scaling, subsets, validation splits and normalisation are done
once for all datasets by :func:`convtrain.data.load.load_dataset`.

Register a new dataset with::

    @DATASETS.register("my_dataset")
    def read_my_dataset(options: StorageOptions) -> RawDataset: ...
"""

from __future__ import annotations

from collections.abc import Callable

from convtrain.data.paths import StorageOptions
from convtrain.data.splits import RawDataset
from convtrain.registry import Registry

DatasetReader = Callable[[StorageOptions], RawDataset]

DATASETS: Registry[DatasetReader] = Registry("dataset")
