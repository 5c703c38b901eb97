"""The dataset registry: ``data.name`` -> a reader returning a :class:`RawDataset`.

A reader is a callable ``reader(options: StorageOptions) -> RawDataset`` that finds (and, when
``options.download`` is set, fetches) its files, validates them and returns uint8 pixels with
the official train/test split. Scaling, subsets, validation splits and normalisation are done
once for all datasets by :func:`convtrain.data.load.load_dataset`.

Register a new dataset with::

    @DATASETS.register("my_dataset")
    @input_shape(3, 32, 32)  # optional: what every sample is, known without reading the files
    def read_my_dataset(options: StorageOptions) -> RawDataset: ...
"""

from __future__ import annotations

from collections.abc import Callable

from convtrain.data.paths import StorageOptions
from convtrain.data.splits import RawDataset
from convtrain.registry import Registry

DatasetReader = Callable[[StorageOptions], RawDataset]

DATASETS: Registry[DatasetReader] = Registry("dataset")


def input_shape(c: int, h: int, w: int) -> Callable[[DatasetReader], DatasetReader]:
    """Declare the per-sample shape ``(C, H, W)`` a reader always returns. With it the model is
    built (and every layer checked) before the data is read, and ``task=summary`` needs no
    data files; a reader without it is loaded first. A declared shape that disagrees with the
    loaded data is corrected by rebuilding (see :func:`convtrain.app.run.run`)."""
    def declare(reader: DatasetReader) -> DatasetReader:
        reader.input_shape = (int(c), int(h), int(w))  # type: ignore[attr-defined]
        return reader
    return declare


def declared_input_shape(reader: DatasetReader) -> tuple[int, int, int] | None:
    """The shape declared with :func:`input_shape`, or None."""
    return getattr(reader, "input_shape", None)
