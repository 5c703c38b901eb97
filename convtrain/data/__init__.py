"""Datasets and mini-batch loaders.

Entry points: :func:`load_dataset` (config -> :class:`DataSplits`) and :func:`iterate_batches`.
Importing this package registers the built-in datasets: ``digits`` (embedded, the default),
``mnist``, ``fashion_mnist`` and ``cifar10``.
"""

from convtrain.data import cifar, digits, mnist  # noqa: F401 - importing registers the readers
from convtrain.data import download  # noqa: F401 - the module; download.download() fetches a URL
from convtrain.data.augment import AugmentSpec, parse_augment
from convtrain.data.config import DataOptions, parse_data_config
from convtrain.data.download import REMOTE_SOURCES
from convtrain.data.load import load_dataset
from convtrain.data.loader import iterate_batches, num_batches
from convtrain.data.paths import StorageOptions
from convtrain.data.registry import DATASETS
from convtrain.data.splits import ArraySplit, DataSplits, Normalization, Preprocessing, \
    RawDataset

__all__ = [
    "ArraySplit",
    "AugmentSpec",
    "DATASETS",
    "DataOptions",
    "DataSplits",
    "Normalization",
    "Preprocessing",
    "REMOTE_SOURCES",
    "RawDataset",
    "StorageOptions",
    "iterate_batches",
    "load_dataset",
    "num_batches",
    "parse_augment",
    "parse_data_config",
]
