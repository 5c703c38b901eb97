"""A minimal PNG encoder (8-bit grey or RGB), so kernel grids can be written as images without
Pillow, TensorFlow or PyTorch. PNG = signature + IHDR + zlib-compressed scanlines + IEND.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from convtrain.errors import InternalError


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """Encode ``image`` (uint8, ``(H, W)`` grey or ``(H, W, 3)`` RGB) as PNG bytes."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise InternalError(f"encode_png: expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        colour_type, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        colour_type, channels = 2, 3
    else:
        raise InternalError(f"encode_png: expected (H, W) or (H, W, 3), got shape {img.shape}")
    height, width = img.shape[:2]
    if height == 0 or width == 0:
        raise InternalError(f"encode_png: empty image of shape {img.shape}")
    rows = img.reshape(height, width * channels)
    # zlib level 1: filter grids are mostly flat runs, so level 6 makes files only ~25% smaller
    # for ~4x the time, and this runs every epoch
    # every scanline starts with filter type 0 ("None")
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 1)) + _chunk(b"IEND", b""))


def decode_png(data: bytes) -> np.ndarray:
    """Decode a PNG written by :func:`encode_png` (filter type 0 only). Used by tests and tools."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR")
    width, height, depth, colour_type = header[:4]
    if depth != 8 or colour_type not in (0, 2):
        raise ValueError(f"unsupported PNG: bit depth {depth}, colour type {colour_type}")
    channels = 1 if colour_type == 0 else 3
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    if np.any(raw[:, 0] != 0):
        raise ValueError("unsupported PNG scanline filter")
    pixels = raw[:, 1:]
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, 3)
