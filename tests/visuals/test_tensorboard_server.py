"""End to end: a 2-job CLI sweep, opened by a real ``tensorboard`` server, queried over HTTP the
way its dashboards do (runs, scalar / image / histogram / text tags, one image, the HParams
experiment and session groups), then looked at in a real headless browser (Chromium, driven by
:mod:`tests.visuals.browser`): what a person sees in Time Series, HParams and Text."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.visuals.browser import DEEP_JS, Browser, find_chromium
from tests.visuals.pillow_png import decode_png
from tests.visuals.test_kernel_grid import auto_layout

pytestmark = pytest.mark.slow

JOBS = {"0/tensorboard/seed=1": "1", "1/tensorboard/seed=2": "2"}  # run -> its seed
SPLITS = ("train", "val", "test")
RUNS = sorted(list(JOBS) + [f"{job}/{split}" for job in JOBS for split in SPLITS])
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
RUN_SCALARS = {"monitor/best_val_accuracy", "monitor/best_epoch", "monitor/best_test_accuracy",
               "optimizer/lr", "performance/epoch_time_s", "performance/images_per_s"} | {
    f"kernels_change/{conv}/{curve}" for conv in ("conv1", "conv2")
    for curve in ("distance_from_init", "norm_vs_init")}
IMAGES = {"kernels/conv1", "kernels/conv2", "feature_maps/conv1", "feature_maps/conv2",
          "feature_maps/input", "kernels_change/conv1", "kernels_change/conv2",
          "activation_max/conv1", "activation_max/conv2",
          "top_patches/conv1", "top_patches/conv2", "attribution/pool2",
          "predictions/confusion_matrix", "predictions/per_class_accuracy",
          "predictions/misclassified"}
#: the HParams columns a person sees without ticking anything: the swept key, then the
#: monitored metric's best and last value and the best epoch's numbers
SHOWN_COLUMNS = ["seed", "best_val_accuracy", "val_accuracy", "best_epoch",
                 "best_test_accuracy", "val_loss"]


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
    """Poll until every run and both HParams sessions are visible (loading is asynchronous)."""
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
    raise AssertionError(f"tensorboard did not serve the runs {RUNS} in time")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A finished 2-job sweep (``seed=1,2``) and a TensorBoard serving it."""
    tmp_path = tmp_path_factory.mktemp("board")
    sweep = tmp_path / "sweep"
    subprocess.run([sys.executable, "-m", "convtrain", "-m", "trainer.max_epochs=2",
                    "seed=1,2", "trainer.progress=false", f"hydra.sweep.dir={sweep}"],
                   cwd=tmp_path, check=True, capture_output=True, text=True, timeout=300)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir",
                                str(sweep), "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        server = Server(f"http://127.0.0.1:{port}")
        wait_until_loaded(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def test_tensorboard_serves_a_two_job_sweep(board):
    server = board
    plugins = server.json("/data/plugins_listing")
    for name in ("scalars", "images", "histograms", "distributions", "hparams", "text"):
        assert plugins[name]["enabled"], name

    scalars = server.json("/data/plugin/scalars/tags")
    images = server.json("/data/plugin/images/tags")
    histograms = server.json("/data/plugin/histograms/tags")
    texts = server.json("/data/plugin/text/tags")
    for job in JOBS:
        assert set(scalars[job]) == RUN_SCALARS
        for split in SPLITS:  # one tag per curve, a run per split: they share a chart
            extra = {"step/loss"} if split == "train" else set()
            assert set(scalars[f"{job}/{split}"]) == {"epoch/loss", "epoch/accuracy"} | extra
        assert set(images[job]) == IMAGES
        assert {"histograms/conv1/weight", "histograms/conv1/weight_grad",
                "histograms/fc2/bias_grad"} <= set(histograms[job])
        assert set(texts[job]) == {"config", "command"}

    # one picture end to end: small_cnn's conv1 = 16 one-channel 3x3 filters, 8 labelled
    # cells a row (tests/visuals/test_kernel_grid.py: the layout), in colour; every 5 epochs
    # by default, so the 2-epoch run has step 0 and the last
    entries = server.json("/data/plugin/images/images?run=0/tensorboard/seed%3D1"
                          "&tag=kernels/conv1")
    assert [e["step"] for e in entries] == [0, 2]
    png = server.raw("/data/plugin/images/individualImage?" + entries[-1]["query"])
    conv1 = auto_layout(16, 1, 3, 3)
    assert decode_png(png).shape == (conv1["height"], conv1["width"], 3)

    groups = server.session_groups()
    assert sorted(g["name"] for g in groups) == sorted(JOBS)
    for group in groups:
        assert group["hparams"]["seed"] == JOBS[group["name"]]  # an integer, as text
        assert group["hparams"]["model.layers.conv1.filters"] == "16"
        assert group["hparams"]["optimizer.name"] == "sgd"
        (session,) = group["sessions"]
        assert session["status"] == "STATUS_SUCCESS"
        metrics = {(m["name"].get("group", ""), m["name"]["tag"])
                   for m in session["metricValues"]}
        assert {("val", "epoch/accuracy"), ("", "monitor/best_val_accuracy")} <= metrics

    # the experiment record: only the swept key, the monitored metric first
    experiment = server.json("/data/plugin/hparams/experiment", {"experimentName": ""})
    assert [(h["name"], h.get("differs", False)) for h in experiment["hparamInfos"]] == \
        [("seed", True)]
    assert [m.get("displayName") for m in experiment["metricInfos"][:5]] == SHOWN_COLUMNS[1:]
    # the kernel-change curves are scalars of the run, not columns of the table
    assert not [m for m in experiment["metricInfos"]
                if m["name"]["tag"].startswith("kernels_change/")]


# --- in the browser -----------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium on PATH (Debian: apt-get install chromium; or set $CHROMIUM)")

@pytest.fixture(scope="module")
def browser():
    with Browser(find_chromium()) as b:
        yield b


@needs_chromium
def test_kernel_images_are_loaded_and_not_blank(board, browser, tmp_path):
    browser.open(board.base + "/?tagFilter=kernels/#timeseries")  # not kernels_change/
    images = browser.wait_for(DEEP_JS + """(() => {
        const imgs = deepElements().filter(el => el.tagName === 'IMG'
                                                 && el.src.includes('imageData'));
        const done = imgs.filter(img => img.complete && img.naturalWidth > 0);
        return done.length >= 4 && done.length === imgs.length ? done.map(imageStats) : null;
    })()""", timeout=90)
    (tmp_path / "kernels.png").write_bytes(browser.screenshot())
    assert len(images) == 4  # two jobs x (conv1, conv2), the last step of each
    for image in images:
        assert image["max"] - image["min"] > 100, image  # a grid of weights, not a blank
        assert image["shownWidth"] > 50, image  # on screen (TensorBoard shrinks wide grids)


@needs_chromium
def test_train_val_and_test_curves_share_one_chart(board, browser, tmp_path):
    browser.open(board.base + "/?tagFilter=epoch#timeseries")
    legend = browser.wait_for(DEEP_JS + """(() => {
        // the card's title (TensorBoard splits it into spans: "epoch" "/loss")
        const title = deepElements().find(el => (el.textContent || '').trim() === 'epoch/loss');
        let card = title;  // climb to the card: the element that also holds the legend table
        while (card && !deepTextOf(card).includes('Smoothed')) card = climb(card);
        const text = card ? deepTextOf(card) : '';
        return text.includes('seed=2/test') ? text : null;
    })()""", timeout=90)
    (tmp_path / "epoch.png").write_bytes(browser.screenshot())
    for job in JOBS:
        for split in SPLITS:
            assert f"{job}/{split}" in legend


@needs_chromium
def test_hparams_table_shows_the_swept_key_and_the_metric_columns(board, browser, tmp_path):
    browser.open(board.base + "/#hparams")
    cells = browser.wait_for(DEEP_JS + """(() => {
        const view = deepElements().find(el => el.tagName === 'TF-HPARAMS-TABLE-VIEW');
        if (!view) return null;
        const cells = deepElements(view.shadowRoot)
            .filter(el => el.tagName === 'VAADIN-GRID-CELL-CONTENT')
            .map(el => el.textContent.trim());
        return cells.includes('1/tensorboard/seed=2') ? cells : null;
    })()""", timeout=90)
    (tmp_path / "hparams.png").write_bytes(browser.screenshot())
    header = [c for c in cells[:cells.index("0/tensorboard/seed=1")] if c]
    assert header[:2] == ["Trial ID", "Show Metrics"]
    assert header[2:] == SHOWN_COLUMNS
    row = cells[cells.index("0/tensorboard/seed=1"):]
    assert "1" in row[:4]  # the seed as an integer, not "1.0000"


@needs_chromium
def test_config_text_is_a_code_block(board, browser, tmp_path):
    browser.open(board.base + "/#text")
    code = browser.wait_for(DEEP_JS + """(() => {
        const blocks = deepElements().filter(el => el.tagName === 'CODE')
            .map(el => el.textContent);
        return blocks.some(t => t.includes('max_epochs: 2')) ? blocks : null;
    })()""", timeout=90)
    (tmp_path / "text.png").write_bytes(browser.screenshot())
    assert any(t.strip().startswith("convtrain ") and "seed=1" in t for t in code)
