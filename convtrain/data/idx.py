"""Reader for the IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the values in C order, big-endian. Every structural
problem (truncation, trailing bytes, bad magic, unknown dtype, wrong rank, image/label count
mismatch) raises :class:`~convtrain.errors.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

from convtrain.data.splits import ArraySplit, check_labels
from convtrain.errors import DataError

# dtype code -> big-endian NumPy dtype, from the format's description on yann.lecun.com.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip detected from its content, not its name).

    Returns:
        An array with the file's shape in native byte order. uint8 data is returned as a
        read-only view of the file's bytes (no copy); copy it before writing to it.

    Raises:
        DataError: naming ``path`` and what is wrong with it.
    """
    path = Path(path)
    payload = _read_bytes(path)
    if len(payload) < 4:
        raise DataError(
            f"{path}: truncated IDX file ({len(payload)} bytes, the header alone needs 4)"
        )
    zero0, zero1, code, ndim = payload[:4]
    if zero0 != 0 or zero1 != 0:
        raise DataError(
            f"{path}: bad IDX magic number 0x{payload[:4].hex()} (must start with 0x0000); "
            "not an IDX file"
        )
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02X} (known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(payload) < header_size:
        raise DataError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_size} bytes, "
            f"the file has {len(payload)}"
        )
    shape = tuple(int(d) for d in np.frombuffer(payload, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(payload) - header_size
    if actual < expected:
        raise DataError(
            f"{path}: truncated IDX data: shape {shape} of {dtype.name} needs {expected} bytes "
            f"after the header, found {actual}"
        )
    if actual > expected:
        raise DataError(
            f"{path}: {actual - expected} unexpected trailing bytes after the IDX data of "
            f"shape {shape}; the header and the data disagree"
        )
    data = np.frombuffer(
        payload, dtype=dtype, count=expected // dtype.itemsize, offset=header_size
    )
    data = data.reshape(shape)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc.strerror or exc}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from None


def read_idx_split(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, num_classes: int
) -> ArraySplit:
    """Read a pair of IDX files as one split.

    Args:
        images_path: IDX3 file of uint8 images ``(N, H, W)``.
        labels_path: IDX1 file of uint8 labels ``(N,)``.
        num_classes: labels must lie in ``0 .. num_classes - 1``.

    Returns:
        uint8 images ``(N, 1, H, W)`` (read-only view) and int64 labels ``(N,)``.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{images_path}: expected uint8 images of shape (N, H, W), got {images.dtype} "
            f"{images.shape}; is this a label file?"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(
            f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} "
            f"{labels.shape}; is this an image file?"
        )
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"image/label count mismatch: {images_path} holds {images.shape[0]} images but "
            f"{labels_path} holds {labels.shape[0]} labels"
        )
    labels = labels.astype(np.int64)
    check_labels(labels, num_classes, str(labels_path))
    return ArraySplit(images[:, None, :, :], labels)
