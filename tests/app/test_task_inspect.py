"""``convtrain task=inspect``: every visual of a trained run's checkpoint, without training --
through the command line on the shared digits run, in process for the registry rule (a new
visual comes for free) and the refusals; and the README's ``load_run`` notebook example, run as
written."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.errors import ConfigError
from convtrain.inference import load_run
from convtrain.visuals.grids import kernel_grid
from convtrain.visuals.hook import VISUAL_HOOKS, VisualHook
from tests.inference import conftest as trained_runs
from tests.inference.conftest import copy_run, run_convtrain
from tests.visuals.test_responses_views import response_layout
from tests.visuals.pillow_png import decode_png

digits_run, fmnist_run = trained_runs.digits_run, trained_runs.fmnist_run
README = Path(__file__).resolve().parents[2] / "README.md"

#: what the digits run's inspect writes (small_cnn: conv1, conv2; Grad-CAM at pool2)
KINDS = {"kernels": ["conv1", "conv2"], "feature_maps": ["conv1", "conv2"],
         "activation_max": ["conv1", "conv2"], "top_patches": ["conv1", "conv2"],
         "attribution": ["pool2"],
         "predictions": ["confusion_matrix", "per_class_accuracy", "misclassified"]}


def fingerprint(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.relative_to(run_dir).parts[0] != "inspect"}


def inspect_in_process(run_dir: Path, out: Path, *overrides: str) -> None:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["task=inspect", f"trainer.resume={run_dir}",
                                          *overrides], return_hydra_config=True)
    run(cfg, run_dir=out)


@pytest.mark.slow  # a subprocess: ~4 s
def test_inspect_writes_every_visual_of_the_checkpoint(digits_run, tmp_path):
    run_dir = copy_run(digits_run, tmp_path)
    before = fingerprint(run_dir)
    proc = run_convtrain(tmp_path, "task=inspect", f"trainer.resume={run_dir}")
    trained = load_run(run_dir)  # best checkpoint
    step = trained.epoch
    assert f"inspect: epoch {step} of {run_dir / 'checkpoints' / 'best.safetensors'}" \
        in proc.stdout
    # the run was trained without pictures: no initial kernels, so no change views
    assert "no usable initial_kernels.npz" in proc.stdout + proc.stderr
    images = run_dir / "inspect" / "images"
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))
    expected = sorted([f"{kind}/{layer}_epoch{step:03d}.png" for kind, layers in KINDS.items()
                       for layer in layers] + ["feature_maps/input.png"])
    assert names == expected
    assert fingerprint(run_dir) == before  # the run's own files are only read

    # the same pictures in the inspect run's own event file (a run named by the checkpoint),
    # at the checkpoint's epoch, with the command and the trained run's config as text
    [board] = (run_dir / "inspect" / "tensorboard").iterdir()
    assert board.name == f"best_epoch{step:03d}"
    assert f"TensorBoard: {board}" in proc.stdout
    acc = EventAccumulator(str(board), size_guidance={"images": 0, "tensors": 0})
    acc.Reload()
    assert set(acc.Tags()["tensors"]) == {"command", "config"}
    command = acc.Tensors("command")[0].tensor_proto.string_val[0].decode()
    assert f"task=inspect trainer.resume={run_dir}" in command
    config = acc.Tensors("config")[0].tensor_proto.string_val[0].decode()
    assert f"max_epochs: {trained.config['trainer']['max_epochs']}" in config
    tags = {f"{kind}/{layer}" for kind, layers in KINDS.items() for layer in layers}
    assert set(acc.Tags()["images"]) == tags | {"feature_maps/input"}
    for tag in tags:
        kind, layer = tag.split("/")
        [event] = acc.Images(tag)
        assert event.step == step
        png = (images / kind / f"{layer}_epoch{step:03d}.png").read_bytes()
        np.testing.assert_array_equal(decode_png(png), decode_png(event.encoded_image_string))
    # the kernels are the checkpoint's weights (at the layer's own limit: no initial kernels
    # for the fixed one); no gradient histograms (nothing was trained)
    weight = trained.model.layers["conv2"].params["weight"]
    np.testing.assert_array_equal(
        decode_png((images / "kernels" / f"conv2_epoch{step:03d}.png").read_bytes()),
        kernel_grid(np.asarray(weight)))
    histograms = acc.Tags()["histograms"]
    assert "histograms/conv1/weight" in histograms
    assert not any(t.endswith("_grad") for t in histograms)

    # a second inspect (another checkpoint) replaces the first: one run, each picture once
    run_convtrain(tmp_path, "task=inspect", f"trainer.resume={run_dir}", "checkpoint=last")
    last = load_run(run_dir, checkpoint="last").epoch
    assert [p.name for p in (run_dir / "inspect" / "tensorboard").iterdir()] == \
        [f"last_epoch{last:03d}"]
    assert {p.name for p in (images / "kernels").iterdir()} == \
        {f"conv1_epoch{last:03d}.png", f"conv2_epoch{last:03d}.png"}


def test_inspect_last_checkpoint_and_a_new_visual_comes_for_free(digits_run, tmp_path, caplog):
    class Marker(VisualHook):  # registered by being defined, like any visual
        def inspect(self, state, step):
            self.ctx.write_image("marker", "epoch", np.full((2, 3), step, np.uint8), step)

    try:
        out = tmp_path / "inspect"
        inspect_in_process(digits_run, out, "checkpoint=last", "logger.tensorboard=false",
                           "logger.responses_top_k=2")
    finally:
        VISUAL_HOOKS.remove(Marker)
    last = load_run(digits_run, checkpoint="last").epoch
    marker = decode_png((out / "images" / "marker" / f"epoch_epoch{last:03d}.png").read_bytes())
    assert np.all(marker == last)
    assert not (out / "tensorboard").exists()
    # no initial_kernels.npz in the run: the change views are skipped, said once
    assert not (out / "images" / "kernels_change").exists()
    assert sum("no usable initial_kernels.npz" in r.getMessage() for r in caplog.records) == 1
    patches = decode_png((out / "images" / "top_patches" / f"conv1_epoch{last:03d}.png")
                         .read_bytes())
    filters = load_run(digits_run).model.layers["conv1"].params["weight"].shape[0]
    geo = response_layout(filters, 2, 3, 3)  # a cell per filter: top_k = 2 crops of 3x3
    assert patches.shape == (geo["height"], geo["width"], 3)


def test_inspect_kernel_change_from_the_runs_initial_kernels(digits_run, tmp_path, caplog):
    run_dir = copy_run(digits_run, tmp_path)
    trained = load_run(run_dir)
    weights = {name: np.asarray(trained.model.layers[name].params["weight"], np.float64)
               for name in ("conv1", "conv2")}
    # a stand-in for the weights the run started from, as training records them
    rng = np.random.default_rng(0)
    initial = {name: (w + rng.normal(0, 0.05, w.shape)).astype(np.float32)
               for name, w in weights.items()}
    np.savez(run_dir / "initial_kernels.npz", **initial, __epoch__=np.array(0))
    out = run_dir / "inspect"
    inspect_in_process(run_dir, out, "logger.responses=false",
                       "logger.classification_every_n_epochs=0")
    assert not any("initial_kernels" in r.getMessage() for r in caplog.records)
    images, step = out / "images", trained.epoch
    for name, w in weights.items():
        limit = float(np.abs(initial[name]).max())  # kernel_fixed_margin 1.0
        kernels = decode_png((images / "kernels" / f"{name}_epoch{step:03d}.png").read_bytes())
        np.testing.assert_array_equal(kernels, kernel_grid(w, scaling="fixed", limit=limit))
        change = decode_png((images / "kernels_change" / f"{name}_epoch{step:03d}.png")
                            .read_bytes())
        np.testing.assert_array_equal(change, kernel_grid(
            w - initial[name], scaling="fixed", limit=limit, colormap="magnitude"))
    [board] = (out / "tensorboard").iterdir()
    acc = EventAccumulator(str(board), size_guidance={"scalars": 0})
    acc.Reload()
    w, w0 = weights["conv2"], initial["conv2"].astype(np.float64)
    [distance] = acc.Scalars("kernels_change/conv2/distance_from_init")
    assert distance.step == step
    assert distance.value == pytest.approx(np.linalg.norm(w - w0) / np.linalg.norm(w0),
                                           rel=1e-5)
    assert not (run_dir / "inspect" / "initial_kernels.npz").exists()  # read, never written


@pytest.mark.slow  # trains lenet5 on 2,000 Fashion-MNIST images once per session
def test_inspect_lenet5_on_fashion_mnist_windows(fmnist_run, tmp_path):
    out = tmp_path / "inspect"
    inspect_in_process(fmnist_run, out, "logger.tensorboard=false")
    step = load_run(fmnist_run).epoch
    images = out / "images"

    def shape(kind, layer):
        return decode_png((images / kind / f"{layer}_epoch{step:03d}.png").read_bytes()).shape

    def cells(f, k, size):
        geo = response_layout(f, k, size, size)
        return geo["height"], geo["width"], 3

    # receptive fields: conv1 5x5 (pad 2); conv2 after a 2x2 pool: 6 + 4 * 2 = 14
    # top patches: a labelled cell per filter (6 and 16), its 8 crops side by side
    assert shape("top_patches", "conv1") == cells(6, 8, 5)
    assert shape("top_patches", "conv2") == cells(16, 8, 14)
    # activation maximisation: a labelled cell per filter of the same windows
    assert shape("activation_max", "conv1") == cells(6, 1, 5)
    assert shape("activation_max", "conv2") == cells(16, 1, 14)
    # the 10 classes' first test images, 28x28 at scale round(64 / 28) = 2
    assert shape("attribution", "pool2") == (3 * (28 * 2 + 2) + 2, 10 * (28 * 2 + 2) + 2, 3)


@pytest.mark.parametrize(("overrides", "message"), [
    ((), r"task=inspect works on a trained run: set trainer\.resume=RUN_DIR"),
    (("trainer.resume=/nonexistent/run",), r"trainer\.resume: '/nonexistent/run' does not exist"),
])
def test_inspect_refusals_are_one_line(tmp_path, overrides, message):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["task=inspect", *overrides])
    with pytest.raises(ConfigError, match=message):
        run(cfg, run_dir=tmp_path)


def test_readme_load_run_example_runs(digits_run, tmp_path):
    text = README.read_text()
    match = re.search(r"<!-- load_run example[^\n]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "README: the load_run example block is missing"
    code = match.group(1).replace('"RUN_DIR"', repr(str(digits_run)))
    env = {k: v for k, v in os.environ.items()}
    repo = str(README.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    picture = decode_png((tmp_path / "conv1_kernels.png").read_bytes())
    weight = load_run(digits_run).model.layers["conv1"].params["weight"]
    np.testing.assert_array_equal(picture, kernel_grid(np.asarray(weight)))
    assert "(32, 1, 8, 8)" in proc.stdout  # conv2's 32 filters on 8x8 digits
