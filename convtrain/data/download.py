"""Checksummed, atomic downloads of dataset files (standard library ``urllib`` only).

A file is streamed into a temporary file next to its destination while being hashed; it is
moved into place with ``os.replace`` only after its checksum matched, so an interrupted or
corrupted download never leaves a partial file under the final name.

Checksums in :data:`REMOTE_SOURCES`:

* MNIST: the MD5s published with torchvision's ``MNIST.resources``.
* Fashion-MNIST: the MD5s published with torchvision's ``FashionMNIST.resources`` and SHA-256s
  computed here from byte-exact reconstructions of the official files. (Debian's
  ``dataset-fashion-mnist`` ships the same deflate streams, only re-wrapped without the
  original gzip file-name field; restoring that header reproduces the official sizes
  26421880 / 29515 / 4422102 / 5148 bytes and torchvision's MD5s exactly.)
* CIFAR-10 binary: the MD5 printed on the dataset's home page,
  https://www.cs.toronto.edu/~kriz/cifar.html (also torchvision's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from convtrain.errors import DataError

_CHUNK = 1 << 20
_USER_AGENT = "convtrain-dataset-download/0.1 (+python-urllib)"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One downloadable file and its expected checksums (either or both may be given)."""

    filename: str
    md5: str | None = None
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class RemoteSource:
    """A dataset's official base URLs (tried in order) and its files."""

    base_urls: tuple[str, ...]
    files: tuple[RemoteFile, ...]

    def file(self, filename: str) -> RemoteFile:
        for remote in self.files:
            if remote.filename == filename:
                return remote
        raise KeyError(filename)


# Looked up at call time (never copied at import), so tests can substitute their own table.
REMOTE_SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        base_urls=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        files=(
            RemoteFile("train-images-idx3-ubyte.gz", md5="f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", md5="d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", md5="9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", md5="ec29112dd5afa0611ce80d1b7f02629c"),
        ),
    ),
    "fashion_mnist": RemoteSource(
        base_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                sha256="3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                md5="25c81989df183df01b3e8a0aad5dffbe",
                sha256="a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                md5="bef4ecab320f06d8554ea6380940ec79",
                sha256="346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                md5="bb300cfdad3c16e7a12a480ee83cd310",
                sha256="67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
            ),
        ),
    ),
    "cifar10": RemoteSource(
        base_urls=("https://www.cs.toronto.edu/~kriz/",),
        files=(RemoteFile("cifar-10-binary.tar.gz", md5="c32a1d4ab5d03f1284b67883e8d87530"),),
    ),
}


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying the given checksums.

    Progress is shown with tqdm on an interactive terminal only (stderr is a TTY).

    Returns:
        ``dest`` as a :class:`~pathlib.Path`.

    Raises:
        DataError: naming the URL on network/HTTP failures, timeouts, truncated bodies and
            checksum mismatches (with expected and actual digests). Nothing is left at
            ``dest`` or in a temporary file when it raises.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(f"cannot write the download of {url} into {dest.parent}: {exc}") from None
    hashers = {"sha256": hashlib.sha256()} if sha256 else {}
    if md5:
        hashers["md5"] = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, hashers, timeout)
        expected = {"sha256": sha256, "md5": md5}
        for kind, hasher in hashers.items():
            actual = hasher.hexdigest()
            wanted = expected[kind].lower()
            if actual != wanted:
                raise DataError(
                    f"checksum mismatch for {url}: {kind} expected {wanted}, got {actual}; the "
                    "download was discarded (a corrupt mirror or an interrupted transfer)"
                )
        os.replace(tmp_name, dest)
    except BaseException:
        # Includes KeyboardInterrupt: a half-written temp file must never survive.
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return dest


def _stream(url: str, out, hashers: dict, timeout: float) -> None:
    """Copy the body of ``url`` into ``out``, feeding every chunk to ``hashers``."""
    from tqdm import tqdm  # noqa: PLC0415 - keeps `import convtrain.data` light

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            received = 0
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=url.rsplit("/", 1)[-1],
                disable=not sys.stderr.isatty(),
                leave=False,
            ) as progress:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    for hasher in hashers.values():
                        hasher.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise DataError(f"download failed for {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DataError(f"download failed for {url}: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets, disk full
        raise DataError(f"download failed for {url}: {type(exc).__name__}: {exc}") from None
    except ValueError as exc:  # malformed URL, e.g. "unknown url type"
        raise DataError(f"download failed for {url}: {exc}") from None
    if total is not None and received != total:
        raise DataError(f"download failed for {url}: received {received} of {total} bytes")


def download_first(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    timeout: float = 60,
) -> Path:
    """Try ``urls`` in order until one downloads and verifies; see :func:`download`.

    Raises:
        DataError: with every URL's failure when none worked.
    """
    failures: list[DataError] = []
    for url in urls:
        try:
            return download(url, dest, sha256=sha256, md5=md5, timeout=timeout)
        except DataError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    details = "; ".join(str(exc) for exc in failures)
    raise DataError(f"could not download {Path(dest).name} from any mirror: {details}")


def fetch_dataset_file(
    dataset: str,
    filename: str,
    directory: str | os.PathLike,
    *,
    mirror: str | None = None,
    timeout: float = 60,
) -> Path:
    """Download one file of ``dataset`` (a key of :data:`REMOTE_SOURCES`) into ``directory``.

    Args:
        mirror: a base URL ending in ``/`` that replaces the official base URLs.
    """
    source = REMOTE_SOURCES[dataset]
    remote = source.file(filename)
    bases = (mirror,) if mirror else source.base_urls
    return download_first(
        [base + filename for base in bases],
        Path(directory) / filename,
        sha256=remote.sha256,
        md5=remote.md5,
        timeout=timeout,
    )
