"""Crash-safe file replacement.

A checkpoint or ``metrics.json`` is first written completely to a temporary file in the same
directory, flushed to disk with ``fsync``, then moved over the old file with ``os.replace``
(atomic on POSIX and Windows). A crash at any point leaves either the old file or the new one,
never a truncated mix. A write that fails (a full or read-only disk) removes its temporary file
and raises the OSError with ``filename`` set to the file it was replacing, so that the message
names the file the user knows.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (parent directories are created).

    Raises:
        OSError: the write failed; ``path`` is unchanged, ``exc.filename`` is ``path``.
    """
    path = Path(path)
    try:
        _replace(path, data)
    except OSError as exc:
        if exc.filename == str(path):
            raise
        error = OSError(exc.errno, exc.strerror or str(exc), str(path))
        raise error from exc


def _replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; results should be readable like any other output
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (best effort: not every OS/filesystem can fsync a dir)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


#: errors that only a write meets (``cannot write PATH: ...`` reads right for them)
_WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def os_error_line(exc: OSError, action: str = "write") -> str:
    """``cannot write /d/metrics.json: No space left on device``: a failed file operation in
    one line, the path first."""
    reason = exc.strerror or str(exc)
    path = str(exc.filename) if exc.filename else ""
    if exc.errno in _WRITE_ONLY_ERRNOS or action != "write":
        return f"cannot {action} {path}: {reason}" if path else f"cannot {action}: {reason}"
    return f"{path}: {reason}" if path else reason
