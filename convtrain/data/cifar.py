"""CIFAR-10 from its *binary* distribution (no pickle is ever loaded).

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/data_batch_{1..5}.bin`` and
``test_batch.bin``; each is a run of 3073-byte records: 1 label byte, then 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, each 32x32 row-major), i.e. already ``(3, 32, 32)``.
Members are read straight from the archive in one sequential pass; an already-extracted
``cifar-10-batches-bin/`` directory next to where the archive would be is used instead when
present (faster: no decompression).
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path

import numpy as np

from convtrain.data.download import fetch_dataset_file
from convtrain.data.paths import StorageOptions, missing_files_error, search_dirs
from convtrain.data.registry import DATASETS, input_shape
from convtrain.data.splits import ArraySplit, RawDataset, check_labels
from convtrain.errors import DataError

ARCHIVE = "cifar-10-binary.tar.gz"
EXTRACTED_DIR = "cifar-10-batches-bin"
TRAIN_MEMBERS = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_MEMBER = "test_batch.bin"
RECORD_BYTES = 1 + 3 * 32 * 32
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def parse_records(payload: bytes, source: str) -> ArraySplit:
    """Decode CIFAR-10 binary records.

    Returns:
        uint8 images ``(N, 3, 32, 32)`` (read-only view of ``payload``) and int64 labels ``(N,)``.
    """
    if len(payload) == 0 or len(payload) % RECORD_BYTES:
        raise DataError(
            f"{source}: {len(payload)} bytes is not a whole number of {RECORD_BYTES}-byte "
            "CIFAR-10 records (1 label byte + 3072 pixel bytes); the file is truncated or not "
            "CIFAR-10 binary"
        )
    records = np.frombuffer(payload, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    check_labels(labels, len(CLASS_NAMES), source)
    return ArraySplit(records[:, 1:].reshape(-1, 3, 32, 32), labels)


def read_members_from_archive(archive: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The contents of the members whose base names are in ``names``, read in one pass."""
    found: dict[str, bytes] = {}
    try:
        # Iterating (instead of getmember) never seeks backwards in the gzip stream.
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if base in names and member.isfile() and base not in found:
                    handle = tar.extractfile(member)
                    found[base] = handle.read() if handle is not None else b""
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"{archive}: cannot read the CIFAR-10 archive ({exc}); delete it and download again"
        ) from None
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(
            f"{archive}: archive lacks member(s) {', '.join(missing)}; "
            "is it cifar-10-binary.tar.gz?"
        )
    return found


def read_members_from_dir(directory: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    for name in names:
        try:
            found[name] = (directory / name).read_bytes()
        except OSError as exc:
            raise DataError(
                f"{directory / name}: cannot read CIFAR-10 batch ({exc.strerror or exc})"
            ) from None
    return found


@DATASETS.register("cifar10")
@input_shape(3, 32, 32)
def read_cifar10(options: StorageOptions) -> RawDataset:
    """Krizhevsky's CIFAR-10: (3, 32, 32) colour images, 50,000 train / 10,000 test, 10 classes."""
    names = (*TRAIN_MEMBERS, TEST_MEMBER)
    dirs = search_dirs(options)
    contents = None
    for directory in dirs:
        if (directory / EXTRACTED_DIR / TEST_MEMBER).is_file():
            contents = read_members_from_dir(directory / EXTRACTED_DIR, names)
            source = str(directory / EXTRACTED_DIR)
            break
        if (directory / ARCHIVE).is_file():
            contents = read_members_from_archive(directory / ARCHIVE, names)
            source = str(directory / ARCHIVE)
            break
    if contents is None:
        if not options.download:
            raise missing_files_error(options, [ARCHIVE], dirs)
        archive = fetch_dataset_file(options.name, ARCHIVE, dirs[0], mirror=options.mirror)
        contents = read_members_from_archive(archive, names)
        source = str(archive)
    train_parts = [parse_records(contents[name], f"{source}:{name}") for name in TRAIN_MEMBERS]
    return RawDataset(
        train=ArraySplit(
            np.concatenate([part.x for part in train_parts]),
            np.concatenate([part.y for part in train_parts]),
        ),
        test=parse_records(contents[TEST_MEMBER], f"{source}:{TEST_MEMBER}"),
        class_names=CLASS_NAMES,
        pixel_max=255.0,
    )
