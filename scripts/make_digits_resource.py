"""Regenerate ``convtrain/data/resources/digits.npz`` from scikit-learn's bundled digits.

scikit-learn is only needed to run this script, never at runtime. The archive is written
byte-for-byte reproducibly (fixed zip timestamps, fixed member order) so that the SHA-256
recorded in ``convtrain/data/resources/README.md`` and checked by the loader stays valid when
the file is regenerated.

Usage::

    python scripts/make_digits_resource.py            # writes the resource, prints its SHA-256
    python scripts/make_digits_resource.py --check    # verifies the committed file instead
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

RESOURCE = Path(__file__).resolve().parents[1] / "convtrain" / "data" / "resources" / "digits.npz"

# np.savez_compressed stamps members with the current time, which would change the file's
# hash on every run; a fixed DOS timestamp keeps the archive reproducible.
_FIXED_ZIP_TIME = (1998, 7, 1, 0, 0, 0)


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 images ``(1797, 8, 8)`` and uint8 labels ``(1797,)``."""
    from sklearn.datasets import load_digits  # noqa: PLC0415 - optional, script-only dependency

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    # The values are small integers stored as float64; refuse to write anything lossy.
    if not np.array_equal(images, np.round(images)) or images.min() < 0 or images.max() > 16:
        raise SystemExit("scikit-learn digits are not integers in 0..16; refusing to convert")
    if labels.min() < 0 or labels.max() > 9:
        raise SystemExit("scikit-learn digit labels are not in 0..9; refusing to convert")
    return images.astype(np.uint8), labels.astype(np.uint8)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise ``arrays`` as a deflate-compressed ``.npz`` with reproducible bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(
        buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9
    ) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue(), compresslevel=9)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="verify the existing file, write nothing"
    )
    parser.add_argument("--output", type=Path, default=RESOURCE, help="where to write the .npz")
    args = parser.parse_args(argv)

    images, labels = load_sklearn_digits()
    payload = npz_bytes({"images": images, "labels": labels})
    digest = hashlib.sha256(payload).hexdigest()
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != payload:
            print(f"{args.output} differs from a fresh conversion (expected sha256 {digest})")
            return 1
        print(f"{args.output} is up to date (sha256 {digest})")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(payload)
    print(f"wrote {args.output}: {len(payload)} bytes, images {images.shape}, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
