"""A user's inputs for ``task=predict``: image files, NumPy arrays and IDX files as one batch of
raw pixels ``(N, C, H, W)``, in the scale the dataset stores (``0 .. pixel_max``).

What is read (the README's "After training" section repeats these rules):

* **Where**: a file, a directory (every supported file in it, not its sub-directories, sorted
  by name; other files and hidden files are skipped) or a glob pattern (``imgs/*.png``,
  ``**`` recursive; matches sorted, unsupported files skipped). Several of these may be given
  as a list.
* **PNG / JPEG** (``.png``, ``.jpg``, ``.jpeg``): decoded by Pillow
  (:func:`convtrain.data.images.read_image`: 8- or 16-bit grey, RGB, RGBA, palette; alpha
  composited over black). Their pixels are fractions of the file's full scale (255, or
  65535 for 16-bit): ``pixel_max`` times that fraction is the raw value (for ``digits``,
  pixel_max = 16: a PNG's 255 becomes 16).
* **Arrays** (``.npy``; ``.npz`` with a single array, or else its array named ``x`` or
  ``images``) and **IDX** files (``.idx``, ``*-ubyte``, or gzip-compressed with ``.gz``) are
  taken as stored: their values must already be raw pixels within ``0 .. pixel_max``, of an
  integer or float dtype, all finite. Shapes: ``(H, W)`` and ``(C, H, W)`` are one image,
  ``(N, H, W)`` N grey images, ``(N, C, H, W)`` N images; a 3-D array is one image when its
  first axis equals the model's channel count, otherwise a stack of grey images.
  An array laid out channels last (``(H, W, C)``, ``(N, H, W, C)``: ``np.asarray`` of a
  Pillow image) is refused, even with ``resize``, with the ``np.moveaxis`` that fixes it.
  (:func:`as_batch` and :func:`check_pixel_values` are also the Python API's rules.)
* **Channels**: grey and RGB convert into each other (grey -> RGB repeats; RGB -> grey is the
  ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B``, :func:`convert_channels`).
* **Size**: another height or width is an error naming the file, its shape and the expected
  shape, unless ``resize`` is true: then Pillow's bilinear filter resizes it
  (:func:`convert_channels` and :func:`resize` in :mod:`convtrain.data.images`).
* **Names**: one per sample, the file's name (its path where two files share a name), with
  ``[i]`` appended for the i-th image of a stack in an array or IDX file.

Every bad input is a :class:`~convtrain.errors.DataError` of one line naming the file (or the
pattern) and what was expected.
"""
from __future__ import annotations

import collections
import dataclasses
import glob
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convtrain.data.idx import read_idx
from convtrain.data.images import IMAGE_SUFFIXES, RESIZE_FILTER, convert_channels, read_image, \
    resize as resize_pixels
from convtrain.errors import DataError, InternalError

ARRAY_SUFFIXES = (".npy", ".npz")
#: the names tried, in order, in an ``.npz`` holding more than one array
NPZ_ARRAY_NAMES = ("x", "images")
#: how a user reads the supported kinds of file in a message
SUPPORTED = "PNG, JPEG, .npy, .npz or IDX"
RESIZE_HINT = "predict.resize=true"
_CONVERTIBLE_CHANNELS = (1, 3)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The samples to predict on.

    Attributes:
        names: one per sample (see the module docstring).
        pixels: float32 ``(N, C, H, W)`` raw pixels, ``0 .. pixel_max``.
    """

    names: tuple[str, ...]
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.names)


def read_inputs(spec: str | os.PathLike | Sequence[str | os.PathLike], *,
                input_shape: Sequence[int], pixel_max: float, resize: bool = False) -> Inputs:
    """Read every sample ``spec`` names (a file, a directory, a glob, or a list of them).

    Args:
        input_shape: the model's per-sample shape ``(C, H, W)``.
        pixel_max: the dataset's raw full scale (16 for digits, 255 for 8-bit images).
        resize: resize images of another height/width instead of refusing them.

    Raises:
        DataError: one line naming the file or pattern (see the module docstring).
    """
    if len(input_shape) != 3:
        raise InternalError(f"read_inputs: input_shape must be (C, H, W), got {input_shape}")
    shape = tuple(int(d) for d in input_shape)
    files = find_input_files(spec)
    names = display_names(files)
    batches = [_read_file(path, name, shape, float(pixel_max), resize)
               for path, name in zip(files, names)]
    all_names = tuple(n for sample_names, _ in batches for n in sample_names)
    pixels = np.concatenate([p for _, p in batches]).astype(np.float32, copy=False)
    return Inputs(all_names, pixels)


# --- which files ------------------------------------------------------------------------------
def is_supported(path: Path) -> bool:
    """Whether ``path``'s name says PNG, JPEG, array or IDX."""
    name = path.name.lower()
    return name.endswith(IMAGE_SUFFIXES + ARRAY_SUFFIXES) or _is_idx_name(name)


def _is_idx_name(name: str) -> bool:
    return name.endswith((".idx", "-ubyte", ".gz"))


def find_input_files(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The files ``spec`` names, in order (see the module docstring)."""
    specs = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not specs:
        raise DataError("no inputs given (expected a file, a directory or a glob pattern)")
    return [path for one in specs for path in _files_of(one)]


def _files_of(spec: str | os.PathLike) -> list[Path]:
    text = os.path.expanduser(os.fspath(spec))
    if not text.strip():
        raise DataError("empty input path (expected a file, a directory or a glob pattern)")
    path = Path(text)
    if path.is_dir():
        found = sorted((p for p in path.iterdir()
                        if not p.name.startswith(".") and p.is_file() and is_supported(p)),
                       key=lambda p: p.name)
        if not found:
            raise DataError(f"{path}: no {SUPPORTED} file in this directory")
        return found
    if path.exists():
        if not is_supported(path):
            raise DataError(f"{path}: not a supported input (expected a {SUPPORTED} file: "
                            f"{', '.join(IMAGE_SUFFIXES + ARRAY_SUFFIXES)}, .idx, *-ubyte, .gz)")
        return [path]
    if glob.has_magic(text):
        matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
        found = [p for p in matches if p.is_file() and is_supported(p)]
        if not found:
            other = f" ({len(matches)} other entries)" if matches else ""
            raise DataError(f"{text}: the pattern matches no {SUPPORTED} file{other}")
        return found
    raise DataError(f"{path}: no such file or directory")


def display_names(files: Sequence[Path]) -> list[str]:
    """Each file's name, or its path where two of the files share a name."""
    counts = collections.Counter(p.name for p in files)
    return [p.name if counts[p.name] == 1 else str(p) for p in files]


# --- reading one file -------------------------------------------------------------------------
def _read_file(path: Path, name: str, shape: tuple[int, int, int], pixel_max: float,
               resize: bool) -> tuple[list[str], np.ndarray]:
    """-> (sample names, float ``(n, C, H, W)`` in the expected shape)."""
    if path.name.lower().endswith(IMAGE_SUFFIXES):
        fractions = read_image(path)
        if shape[0] not in _CONVERTIBLE_CHANNELS and fractions.shape[0] != shape[0]:
            raise DataError(f"{path}: an image file gives {fractions.shape[0]} channel(s), the "
                            f"model expects {shape[0]}; use a .npy array of shape {shape}")
        pixels = (fractions * pixel_max)[None]
        names, source = [name], f"{path}: image"
    else:
        array = _read_array(path)
        source = f"{path}: array of shape {array.shape}"
        pixels, stacked = as_batch(array, shape, source)
        check_pixel_values(pixels, pixel_max, str(path))
        names = [f"{name}[{i}]" for i in range(len(pixels))] if stacked else [name]
        return names, _fit(pixels, f"{source} read as image(s)", shape, resize)
    return names, _fit(pixels, source, shape, resize)


def _read_array(path: Path) -> np.ndarray:
    if _is_idx_name(path.name.lower()) and not path.name.lower().endswith(ARRAY_SUFFIXES):
        return read_idx(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                return _pick_npz_array(loaded, path)
        return loaded
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"{path}: cannot read it as a NumPy array file: {reason}") from None


def _pick_npz_array(archive: np.lib.npyio.NpzFile, path: Path) -> np.ndarray:
    keys = list(archive.files)
    if len(keys) == 1:
        return archive[keys[0]]
    present = [k for k in NPZ_ARRAY_NAMES if k in keys]
    if len(present) == 1:
        return archive[present[0]]
    wanted = " or ".join(repr(k) for k in NPZ_ARRAY_NAMES)
    if not keys:
        raise DataError(f"{path}: the .npz archive holds no array (expected one array, or one "
                        f"named {wanted})")
    if present:
        raise DataError(f"{path}: the .npz archive holds both 'x' and 'images'; keep one")
    raise DataError(f"{path}: the .npz archive holds {len(keys)} arrays "
                    f"({', '.join(map(repr, keys))}); expected one array, or one named {wanted}")


def as_batch(array: np.ndarray, shape: Sequence[int], source: str) -> tuple[np.ndarray, bool]:
    """The one shape rule for raw pixels (files read by ``task=predict`` and arrays given to
    :meth:`TrainedRun.predict <convtrain.inference.TrainedRun.predict>`): ``(H, W)`` and
    ``(C, H, W)`` are one image, ``(N, H, W)`` N grey images, ``(N, C, H, W)`` N images; a 3-D
    array is one image when its first axis equals the model's channel count ``shape[0]``.

    Args:
        shape: the model's per-sample shape ``(C, H, W)``.
        source: the start of a message (``<file>: array of shape (...)``).

    Returns:
        ``(n, c, h, w)`` (a view) and whether ``array`` holds a stack.

    Raises:
        DataError: a non-numeric dtype, another rank, an empty array, or an array laid out
            channels last (``(H, W, C)``: what ``np.asarray`` of a Pillow image gives), which
            read channels first would be garbage -- refused even with resizing.
    """
    if array.dtype.kind not in "iuf":
        raise DataError(f"{source} of dtype {array.dtype}; expected integer or float pixels")
    layouts = "(H, W), (C, H, W), (N, H, W) or (N, C, H, W)"
    if array.ndim not in (2, 3, 4):
        raise DataError(f"{source}; expected {layouts}")
    if array.size == 0:
        raise DataError(f"{source} is empty; expected {layouts}")
    if array.ndim == 2:
        batch, stacked = array[None, None], False
    elif array.ndim == 3 and array.shape[0] == shape[0]:
        batch, stacked = array[None], False
    elif array.ndim == 3:
        batch, stacked = array[:, None], True
    else:
        batch, stacked = array, True
    if tuple(batch.shape[1:]) != tuple(shape) and _looks_channels_last(array.shape, shape):
        raise DataError(f"{source} looks channels last ((..., H, W, C)) but the model takes "
                        f"{tuple(shape)} (C, H, W): np.moveaxis(array, -1, -3) puts the "
                        "channels first")
    return batch, stacked


def _looks_channels_last(actual: tuple[int, ...], shape: Sequence[int]) -> bool:
    """``(..., H, W, C)`` with the model's H and W and a grey/RGB/RGBA channel count (what
    Pillow and matplotlib use)."""
    return (len(actual) in (3, 4) and actual[-1] in (1, 3, 4)
            and tuple(actual[-3:-1]) == tuple(shape[1:]))


def check_pixel_values(pixels: Any, pixel_max: float, source: str) -> None:
    """The one value rule for raw pixels (``task=predict``'s arrays and the Python API): all
    finite, within ``0 .. pixel_max`` (the dataset's stored scale, not normalised).

    Raises:
        DataError: ``<source>: ...`` naming the count of NaN/infinite values or the range.
    """
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        raise DataError(f"{source}: {bad} NaN or infinite value(s); expected finite pixels")
    low, high = pixels.min(), pixels.max()
    if low < 0 or high > pixel_max:
        raise DataError(f"{source}: values {low:g} .. {high:g}, expected raw pixels within "
                        f"0 .. {pixel_max:g} (the dataset's stored scale, not normalised)")


def _fit(pixels: np.ndarray, source: str, shape: tuple[int, int, int],
         resize: bool) -> np.ndarray:
    """``(n, c, h, w)`` -> float32 ``(n, *shape)``: channels converted, size checked or resized.
    ``source``: ``<file>: image`` or ``<file>: array of shape ...``, the start of a message."""
    channels, height, width = shape
    have = pixels.shape[1]
    sample_shape = tuple(pixels.shape[1:])
    if have != channels:
        if have not in _CONVERTIBLE_CHANNELS or channels not in _CONVERTIBLE_CHANNELS:
            raise DataError(f"{source} of shape {sample_shape} (C, H, W), the model expects "
                            f"{shape}: only grey and RGB convert into each other")
        pixels = convert_channels(pixels.astype(np.float32, copy=False), channels)
    if pixels.shape[2:] != (height, width):
        if not resize:
            raise DataError(f"{source} of shape {sample_shape} (C, H, W), the model expects "
                            f"{shape}; add {RESIZE_HINT} to resize with Pillow's "
                            f"{RESIZE_FILTER.name.lower()} filter")
        pixels = resize_pixels(pixels, (height, width))
    return pixels.astype(np.float32, copy=False)
