"""Reading back the PNGs the visuals write, with Pillow (an independent decoder)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> uint8 ``(H, W)`` grey or ``(H, W, 3)`` RGB, asserting the file is a PNG."""
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.format == "PNG" and picture.mode in ("L", "RGB"), (picture.format,
                                                                            picture.mode)
        return np.asarray(picture)
