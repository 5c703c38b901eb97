"""End to end: a 2-job CLI sweep, opened by a real ``tensorboard`` server, queried over HTTP the
way its dashboards do (runs, plugin listing, scalar / image / histogram tags, one image, and the
HParams session groups)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.visuals.pillow_png import decode_png

pytestmark = pytest.mark.slow

RUNS = ["0/tensorboard", "1/tensorboard"]  # <sweep>/<job>/tensorboard, relative to --logdir
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
EPOCH_SCALARS = {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "test/loss",
                 "test/accuracy", "lr", "epoch_time_s", "images_per_s"}
IMAGES = {"kernels/conv1", "kernels/conv2", "feature_maps/conv1", "feature_maps/conv2",
          "feature_maps/input", "activation_max/conv1", "activation_max/conv2",
          "top_patches/conv1", "top_patches/conv2", "attribution/pool2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """HTTP helpers for one TensorBoard at ``base``."""

    def __init__(self, base: str):
        self.base = base

    def raw(self, path: str, body: dict | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.read()

    def json(self, path: str, body: dict | None = None):
        return json.loads(self.raw(path, body))

    def session_groups(self) -> list[dict]:
        body = {"experimentName": "", "allowedStatuses": STATUSES, "colParams": [],
                "startIndex": 0, "sliceSize": 100}
        return self.json("/data/plugin/hparams/session_groups", body).get("sessionGroups", [])


def wait_until_loaded(server: Server, process: subprocess.Popen, deadline_s: float = 90):
    """Poll until both runs and both HParams sessions are visible (loading is asynchronous)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tensorboard exited with {process.returncode}: "
                                 f"{process.stdout.read()}")
        try:
            if sorted(server.json("/data/runs")) == RUNS and len(server.session_groups()) == 2:
                return
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass  # not listening / not loaded yet
        time.sleep(0.5)
    raise AssertionError("tensorboard did not serve the two runs in time")


def test_tensorboard_serves_a_two_job_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    subprocess.run([sys.executable, "-m", "convtrain", "-m", "trainer.max_epochs=1",
                    "seed=1,2", "trainer.progress=false", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir",
                                str(sweep), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server = Server(f"http://127.0.0.1:{port}")
        wait_until_loaded(server, process)

        plugins = server.json("/data/plugins_listing")
        for name in ("scalars", "images", "histograms", "distributions", "hparams", "text"):
            assert plugins[name]["enabled"], name

        scalars = server.json("/data/plugin/scalars/tags")
        images = server.json("/data/plugin/images/tags")
        histograms = server.json("/data/plugin/histograms/tags")
        for run in RUNS:
            assert EPOCH_SCALARS <= set(scalars[run])
            assert set(images[run]) == IMAGES
            assert {"conv1/weight", "conv1/weight_grad", "fc2/bias_grad"} <= set(histograms[run])

        # one picture end to end: small_cnn's conv1 = 16 one-channel 3x3 filters on a 4x4
        # grid of 3*8 px tiles with 1 px padding -> 4 * (24 + 1) + 1 = 101 px square
        entries = server.json("/data/plugin/images/images?run=0/tensorboard&tag=kernels/conv1")
        assert [e["step"] for e in entries] == [0, 1]
        png = server.raw("/data/plugin/images/individualImage?" + entries[-1]["query"])
        assert decode_png(png).shape == (101, 101)

        groups = server.session_groups()
        assert len(groups) == 2
        assert sorted(g["hparams"]["seed"] for g in groups) == [1, 2]
        for group in groups:
            assert group["hparams"]["model.layers.conv1.filters"] == 16
            assert group["hparams"]["optimizer.name"] == "sgd"
            (session,) = group["sessions"]
            assert session["status"] == "STATUS_SUCCESS"
            metrics = {m["name"]["tag"] for m in session["metricValues"]}
            assert {"val/accuracy", "test/accuracy", "val/loss"} <= metrics

        experiment = server.json("/data/plugin/hparams/experiment", {"experimentName": ""})
        differing = [h["name"] for h in experiment["hparamInfos"] if h.get("differs")]
        assert differing == ["seed"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()
