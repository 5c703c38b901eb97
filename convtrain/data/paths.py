"""Where dataset files are looked for and downloaded to.

Search order for a dataset called ``NAME``:

1. ``data.root`` when set: the directory that holds this dataset's files directly;
2. otherwise ``$CONVTRAIN_DATA/NAME`` when the environment variable is set;
3. otherwise ``$XDG_CACHE_HOME/convtrain/NAME``, i.e. ``~/.cache/convtrain/NAME`` by default;
4. then read-only system copies, e.g. Debian's ``/usr/share/datasets/fashion-mnist``.

Downloads always go to the first directory (1, 2 or 3).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from convtrain.errors import DataError

ENV_DATA_DIR = "CONVTRAIN_DATA"


@dataclasses.dataclass(frozen=True)
class StorageOptions:
    """What a dataset reader needs to find (or fetch) its files.

    Attributes:
        name: the dataset's registry name, also its cache sub-directory.
        root: ``data.root`` (None when unset).
        download: ``data.download``.
        mirror: ``data.mirror``, a base URL ending in ``/`` (None for the official ones).
    """

    name: str
    root: str | None = None
    download: bool = False
    mirror: str | None = None


def primary_dir(options: StorageOptions) -> Path:
    """The writable directory for ``options.name`` (steps 1-3 of the module docstring)."""
    if options.root is not None:
        return Path(options.root).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser() / options.name
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "convtrain" / options.name


def search_dirs(options: StorageOptions, system_dirs: Sequence[str | Path] = ()) -> list[Path]:
    """The directories searched, in order: the primary one, then ``system_dirs``."""
    return [primary_dir(options), *(Path(d) for d in system_dirs)]


def find_file(dirs: Sequence[Path], candidates: Sequence[str]) -> Path | None:
    """The first existing ``dir / name``, trying every candidate name in each dir in turn."""
    for directory in dirs:
        for name in candidates:
            path = directory / name
            if path.is_file():
                return path
    return None


def missing_files_error(
    options: StorageOptions, missing: Sequence[str], dirs: Sequence[Path]
) -> DataError:
    """The error for files that were not found and may not be downloaded."""
    searched = ", ".join(f"{d} (a file, not a directory)" if d.exists() and not d.is_dir()
                         else str(d) for d in dirs)
    return DataError(
        f"{options.name}: missing dataset file(s) {', '.join(missing)} (searched "
        f"{searched}); add data.download=true to download them into "
        f"{dirs[0]}, point data.root=DIR at a directory that holds them, or set "
        f"${ENV_DATA_DIR} to a parent directory containing '{options.name}/'"
    )
