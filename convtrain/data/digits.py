"""The embedded 8x8 handwritten digits (UCI "Optical Recognition of Handwritten Digits").

No network and no files outside the package: ``resources/digits.npz`` holds 1797 uint8 images
``(8, 8)`` with values 0..16. See ``resources/README.md`` for provenance and licence.

The train/test split is stratified and drawn with :data:`SPLIT_SEED`, a constant that does not
depend on the run's seed, so test accuracies of different runs measure the same 360 images.
"""

from __future__ import annotations

import hashlib
import io
from importlib import resources

import numpy as np

from convtrain.data.paths import StorageOptions
from convtrain.data.registry import DATASETS, input_shape
from convtrain.data.splits import ArraySplit, RawDataset, check_labels
from convtrain.data.stratify import stratified_split
from convtrain.errors import DataError

RESOURCE_NAME = "digits.npz"
# Must match resources/README.md; regenerate with scripts/make_digits_resource.py.
RESOURCE_SHA256 = "6a6432310fd6e1be5ff3b45259efbbb2c8e76103c5f64f64b4d80f530315b5c6"
NUM_IMAGES = 1797
TEST_SIZE = 360  # ~20 %, leaving 1437 training images
SPLIT_SEED = 1998  # the dataset's year; any fixed value works, changing it changes the test set
CLASS_NAMES = tuple(str(digit) for digit in range(10))


def read_digits_arrays(payload: bytes | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The verified embedded arrays: uint8 images ``(1797, 8, 8)`` and uint8 labels ``(1797,)``.

    Args:
        payload: the ``.npz`` bytes to check and read; the packaged resource by default.

    Raises:
        DataError: if the file is missing, altered or damaged.
    """
    source = f"convtrain/data/resources/{RESOURCE_NAME}"
    if payload is None:
        try:
            payload = (
                resources.files("convtrain.data").joinpath("resources", RESOURCE_NAME).read_bytes()
            )
        except OSError as exc:
            raise DataError(
                f"{source}: cannot read the embedded digits ({exc}); reinstall convtrain"
            ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != RESOURCE_SHA256:
        raise DataError(
            f"{source}: SHA-256 {digest} does not match the expected {RESOURCE_SHA256}; the file "
            "is corrupt or was modified (regenerate it with scripts/make_digits_resource.py)"
        )
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        images, labels = archive["images"], archive["labels"]
    if images.shape != (NUM_IMAGES, 8, 8) or labels.shape != (NUM_IMAGES,):
        raise DataError(
            f"{source}: unexpected shapes images {images.shape}, labels {labels.shape}"
        )
    return images, labels


@DATASETS.register("digits")
@input_shape(1, 8, 8)
def read_digits(options: StorageOptions) -> RawDataset:
    """1797 8x8 digits, values 0..16, split 1437/360 with the fixed :data:`SPLIT_SEED`.

    ``options`` is accepted for the common reader signature; the data never leaves the package.
    """
    images, labels = read_digits_arrays()
    labels = labels.astype(np.int64)
    check_labels(labels, len(CLASS_NAMES), RESOURCE_NAME)
    everything = ArraySplit(images[:, None, :, :], labels)
    train_idx, test_idx = stratified_split(labels, TEST_SIZE, np.random.default_rng(SPLIT_SEED))
    return RawDataset(
        train=everything.take(train_idx),
        test=everything.take(test_idx),
        class_names=CLASS_NAMES,
        pixel_max=16.0,
    )
