"""Image files: PNG encoding for the visuals (NumPy and zlib); through Pillow, PNG/JPEG decoding,
channel conversion and resizing for inference on a user's own pictures.

Arrays here are host NumPy arrays: images are ``(H, W)`` / ``(H, W, 3)`` uint8 when encoded,
``(C, H, W)`` float when decoded or transformed.

Rules (documented in the README's "After training" section):

* **Decoding** (:func:`read_image`): 8-bit grey, 16-bit grey, RGB, RGBA, grey+alpha and
  palette PNGs, and grey / RGB / CMYK JPEGs. Values are returned as fractions of the file's
  full scale (255 for 8-bit, 65535 for 16-bit). An alpha channel is composited over black
  (``colour * alpha``): transparent areas become 0, the background of MNIST-style data. A
  JPEG's EXIF orientation is applied, as photo viewers do.
* **Channels** (:func:`convert_channels`): grey -> RGB repeats the grey value; RGB -> grey is the
  ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``, without its
  rounding to integers).
* **Size** (:func:`resize`): Pillow's bilinear filter on each channel in 32-bit float (mode
  ``F``), antialiased when shrinking; its weights are never negative, so values stay inside
  the input's range.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from convtrain.errors import DataError, InternalError

#: file suffixes read by :func:`read_image` (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: RGB -> grey weights (ITU-R 601-2 luma, as Pillow's ``convert("L")``)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: the filter :func:`resize` uses
RESIZE_FILTER = Image.Resampling.BILINEAR

_FULL_SCALE_16 = 65535.0
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")  # a 16-bit grey PNG opens as one of these


def encode_png(image: np.ndarray) -> bytes:
    """Encode ``image`` (uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB) as PNG bytes (8 bits per
    channel, no interlacing, no ancillary chunks).

    Raises:
        InternalError: another dtype or shape (a caller's bug: the visuals build these pixels).
    """
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InternalError(f"encode_png: expected uint8 pixels, got {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        raise InternalError(f"encode_png: expected (H, W) or (H, W, 3), got shape {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise InternalError(f"encode_png: empty image of shape {img.shape}")
    # NumPy and zlib directly: ~2.5x faster than Pillow's encoder (which tries every filter
    # on every row), and the visuals encode a few pictures every epoch. Each row is filtered
    # "Up" (minus the row above, mod 256; the first row as it is): the pictures are tiles
    # upscaled by repeating pixels, so most rows filter to zeros. zlib level 1: level 6 makes
    # the files only ~5 % smaller for ~3x the time; grey pictures (feature-map grids) compress
    # smaller and faster still with run-length matching only.
    height = img.shape[0]
    rows = img.reshape(height, -1)
    filtered = np.empty((height, rows.shape[1] + 1), np.uint8)
    filtered[0, 0], filtered[1:, 0] = 0, 2  # the filter type starts each row
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    deflate = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS, 9,
                               zlib.Z_RLE if img.ndim == 2 else zlib.Z_DEFAULT_STRATEGY)
    header = struct.pack(">IIBBBBB", img.shape[1], height, 8, 0 if img.ndim == 2 else 2, 0, 0, 0)
    return b"".join((b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", deflate.compress(filtered) + deflate.flush()),
                     _png_chunk(b"IEND", b"")))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk: length, type, data, CRC-32 of type and data (big-endian)."""
    return b"".join((struct.pack(">I", len(data)), kind, data,
                     struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode a PNG or JPEG file.

    Returns:
        float64 ``(C, H, W)``, ``C`` = 1 (grey) or 3 (RGB), values in ``[0, 1]`` as fractions
        of the file's full scale, alpha composited over black (see the module docstring).

    Raises:
        DataError: naming ``path``: missing, unreadable, not a PNG/JPEG, truncated, or a pixel
            format without a grey or RGB meaning.
    """
    path = Path(path)
    try:
        with Image.open(path, formats=["PNG", "JPEG"]) as opened:
            picture = ImageOps.exif_transpose(opened) if opened.format == "JPEG" else opened
            picture.load()
            return _to_fractions(picture, path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a PNG or JPEG image (Pillow cannot identify it)") from None
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: refused, too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's corrupt-file errors
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise DataError(f"{path}: cannot read the image: {reason}") from None


def _to_fractions(picture: Image.Image, path: Path) -> np.ndarray:
    mode = picture.mode
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(picture, dtype=np.float64)[None] / _FULL_SCALE_16
    if mode == "1":
        picture = picture.convert("L")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in picture.info
        picture = picture.convert("RGBA" if has_alpha else "RGB")
    elif mode in ("CMYK", "YCbCr", "RGBX", "LAB", "HSV"):
        picture = picture.convert("RGB")
    elif mode == "La":
        picture = picture.convert("LA")
    elif mode == "RGBa":
        picture = picture.convert("RGBA")
    if picture.mode not in ("L", "LA", "RGB", "RGBA"):
        raise DataError(f"{path}: unsupported pixel format {mode!r} (expected grey, grey with "
                        "alpha, RGB, RGBA or palette)")
    pixels = np.asarray(picture, dtype=np.float64) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if picture.mode in ("LA", "RGBA"):
        pixels = pixels[:, :, :-1] * pixels[:, :, -1:]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """``(..., C, H, W)`` with ``C`` in (1, 3) -> ``(..., channels, H, W)``, ``channels`` in
    (1, 3), by the rule of the module docstring; the same array when ``C == channels``.

    Raises:
        InternalError: another channel count (callers check the user's data first).
    """
    have = pixels.shape[-3]
    if have == channels:
        return pixels
    if (have, channels) == (1, 3):
        return np.repeat(pixels, 3, axis=-3)
    if (have, channels) == (3, 1):
        red, green, blue = LUMA_WEIGHTS
        grey = red * pixels[..., 0, :, :] + green * pixels[..., 1, :, :] \
            + blue * pixels[..., 2, :, :]
        return grey[..., None, :, :]
    raise InternalError(f"convert_channels: cannot convert {have} channels to {channels}")


def resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(..., H, W)`` -> float32 ``(..., *size)``: Pillow's bilinear filter on each plane."""
    height, width = size
    planes = pixels.reshape(-1, *pixels.shape[-2:])
    resized = [np.asarray(Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32))
                          .resize((width, height), RESIZE_FILTER))
               for plane in planes]
    return np.stack(resized).reshape(*pixels.shape[:-2], height, width)
