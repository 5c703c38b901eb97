"""Downloads against a local HTTP server: success, mirrors, checksum and network failures."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from convtrain.data import download as download_module
from convtrain.data import load_dataset
from convtrain.data.download import RemoteFile, RemoteSource, download, download_first
from convtrain.errors import DataError

MNIST_STEMS = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_gz(array: np.ndarray) -> bytes:
    """A gzip-compressed uint8 IDX file built with struct."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return gzip.compress(header + array.astype(np.uint8).tobytes())


class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, records requested paths, plus two misbehaving endpoints."""

    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        if self.path == "/slow":
            time.sleep(2)
        if self.path == "/truncated":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output clean
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that gives up mid-response (a timeout, a truncated download) breaks the pipe of
    that request's thread; that is what the tests provoke, not an error to print. Printed, its
    traceback would land in whatever test runs when the late thread finishes (seen under load
    in test_one_line_messages' stderr check). Request threads are joined at server_close."""

    daemon_threads = False
    block_on_close = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def server(tmp_path):
    """A ThreadingHTTPServer on 127.0.0.1 (free port) serving small MNIST-style files."""
    served = tmp_path / "served"
    served.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 4, 4), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(30) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 4, 4), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        (served / f"{stem}.gz").write_bytes(idx_gz(array))
    requests: list[str] = []
    handler = functools.partial(
        type("RecordingHandler", (Handler,), {"requests": requests}), directory=str(served)
    )
    httpd = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield {
            "url": f"http://127.0.0.1:{httpd.server_address[1]}/",
            "dir": served,
            "arrays": arrays,
            "requests": requests,
        }
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def table_for(
    served: Path, base_urls=("https://unreachable.invalid/",), corrupt: str | None = None
) -> RemoteSource:
    """A checksum table for the served files; ``corrupt`` names a file given a wrong sha256."""
    files = []
    for stem in MNIST_STEMS:
        payload = (served / f"{stem}.gz").read_bytes()
        sha256 = hashlib.sha256(payload).hexdigest()
        if stem == corrupt:
            sha256 = "0" * 64
        files.append(RemoteFile(f"{stem}.gz", md5=hashlib.md5(payload).hexdigest(), sha256=sha256))
    return RemoteSource(base_urls=tuple(base_urls), files=tuple(files))


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_dataset_download_through_mirror(server, tmp_path, monkeypatch):
    monkeypatch.setitem(download_module.REMOTE_SOURCES, "mnist", table_for(server["dir"]))
    dest = tmp_path / "dest"
    cfg = {
        "name": "mnist",
        "root": str(dest),
        "download": True,
        "mirror": server["url"].rstrip("/"),
        "normalize": False,
        "val_fraction": 0,
    }
    data = load_dataset(cfg, seed=0)
    assert np.array_equal(
        data.train.x[:, 0] * 255, server["arrays"]["train-images-idx3-ubyte"].astype(np.float32)
    )
    assert np.array_equal(data.test.y, server["arrays"]["t10k-labels-idx1-ubyte"])
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{s}.gz" for s in MNIST_STEMS)
    for stem in MNIST_STEMS:
        assert (dest / f"{stem}.gz").read_bytes() == (server["dir"] / f"{stem}.gz").read_bytes()
    assert len(server["requests"]) == 4
    load_dataset(cfg, seed=0)  # files now present: nothing is fetched again
    assert len(server["requests"]) == 4


def test_official_base_urls_are_tried_in_order(server, tmp_path, monkeypatch):
    bases = (closed_port_url(), server["url"] + "missing/", server["url"])
    monkeypatch.setitem(
        download_module.REMOTE_SOURCES, "mnist", table_for(server["dir"], base_urls=bases)
    )
    data = load_dataset({"name": "mnist", "root": str(tmp_path / "d"), "download": True}, seed=0)
    assert len(data.train) + len(data.val) == 30
    assert server["requests"][:2] == [
        "/missing/train-images-idx3-ubyte.gz",
        "/train-images-idx3-ubyte.gz",
    ]


def test_checksum_mismatch_names_url_and_digests_and_leaves_nothing(server, tmp_path, monkeypatch):
    table = table_for(server["dir"], corrupt="t10k-images-idx3-ubyte")
    monkeypatch.setitem(download_module.REMOTE_SOURCES, "mnist", table)
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        load_dataset(
            {"name": "mnist", "root": str(dest), "download": True, "mirror": server["url"]}, seed=0
        )
    message = str(info.value)
    actual = hashlib.sha256((server["dir"] / "t10k-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert (
        "checksum mismatch" in message and server["url"] + "t10k-images-idx3-ubyte.gz" in message
    )
    assert "0" * 64 in message and actual in message
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part") or p.name.startswith(".")]


def test_md5_mismatch_and_md5_success(server, tmp_path):
    url = server["url"] + "train-labels-idx1-ubyte.gz"
    payload = (server["dir"] / "train-labels-idx1-ubyte.gz").read_bytes()
    good = download(url, tmp_path / "ok.gz", md5=hashlib.md5(payload).hexdigest())
    assert good.read_bytes() == payload
    with pytest.raises(
        DataError, match=r"md5 expected f{32}, got " + hashlib.md5(payload).hexdigest()
    ):
        download(url, tmp_path / "bad.gz", md5="F" * 32)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["ok.gz"]


def test_http_404_names_url_and_leaves_no_partial_file(server, tmp_path, monkeypatch):
    monkeypatch.setitem(download_module.REMOTE_SOURCES, "mnist", table_for(server["dir"]))
    (server["dir"] / "train-labels-idx1-ubyte.gz").unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"HTTP 404") as info:
        load_dataset(
            {"name": "mnist", "root": str(dest), "download": True, "mirror": server["url"]}, seed=0
        )
    assert server["url"] + "train-labels-idx1-ubyte.gz" in str(info.value)
    assert not (dest / "train-labels-idx1-ubyte.gz").exists()
    assert not [p for p in dest.iterdir() if p.name.endswith(".part")]


def test_failed_download_keeps_existing_destination(server, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "file.gz"
    dest.write_bytes(b"old")
    with pytest.raises(DataError):
        download(server["url"] + "nope.gz", dest)
    assert dest.read_bytes() == b"old" and [p.name for p in out.iterdir()] == ["file.gz"]


def test_connection_refused_names_url(tmp_path):
    url = closed_port_url() + "x.gz"
    with pytest.raises(DataError, match="download failed for " + url):
        download(url, tmp_path / "x.gz", timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_timeout_names_url(server, tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError, match="download failed for " + server["url"] + "slow"):
        download(server["url"] + "slow", tmp_path / "out" / "slow", timeout=0.3)
    assert time.perf_counter() - start < 1.9
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_body_is_rejected(server, tmp_path):
    with pytest.raises(
        DataError, match=r"download failed for .*/truncated: .*(10 of 1000 bytes|IncompleteRead)"
    ):
        download(server["url"] + "truncated", tmp_path / "out" / "t")
    assert list((tmp_path / "out").iterdir()) == []


def test_download_first_reports_every_failure(server, tmp_path):
    urls = [server["url"] + "a.gz", server["url"] + "b.gz"]
    with pytest.raises(
        DataError, match=r"from any mirror: download failed for .*/a\.gz: HTTP 404.*; "
                         r"download failed for .*/b\.gz: HTTP 404"
    ) as info:
        download_first(urls, tmp_path / "a.gz")
    assert "\n" not in str(info.value)  # a user-facing error is one line


@pytest.mark.skipif(
    not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_fashion_mnist_table_matches_debian_files_rewrapped():
    """Debian re-wrapped the official deflate streams without the gzip FNAME field.

    Restoring the official header (FNAME flag, the 2017 mtime, the file name) must reproduce
    torchvision's published MD5 *and* our SHA-256 for every file, which checks both the table
    and the claim that Debian's copies hold exactly the official data.
    """
    mtimes = {
        "train-images-idx3-ubyte": 1504176606,
        "train-labels-idx1-ubyte": 1504176606,
        "t10k-images-idx3-ubyte": 1504176627,
        "t10k-labels-idx1-ubyte": 1504176627,
    }
    sizes = {
        "train-images-idx3-ubyte": 26421880,
        "train-labels-idx1-ubyte": 29515,
        "t10k-images-idx3-ubyte": 4422102,
        "t10k-labels-idx1-ubyte": 5148,
    }
    source = download_module.REMOTE_SOURCES["fashion_mnist"]
    for stem, mtime in mtimes.items():
        body = (DEBIAN_FASHION / f"{stem}.gz").read_bytes()[10:]
        official = (
            b"\x1f\x8b\x08\x08"
            + struct.pack("<I", mtime)
            + b"\x00\x03"
            + stem.encode()
            + b"\x00"
            + body
        )
        remote = source.file(f"{stem}.gz")
        assert len(official) == sizes[stem]
        assert hashlib.md5(official).hexdigest() == remote.md5
        assert hashlib.sha256(official).hexdigest() == remote.sha256
