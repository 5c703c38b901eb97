"""End-to-end tests of the ``convtrain`` command (Hydra app) run as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

METRIC_KEYS = {
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
    "epochs_completed", "wall_time_s", "train_images_per_s",
}
FAST = ["trainer.max_epochs=2"]


def convtrain(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m convtrain ARGS`` in ``tmp_path`` (run dirs land under it)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "-m", "convtrain", *args], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"convtrain {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("metrics.json"))


def test_train_writes_run_directory(tmp_path):
    proc = convtrain(tmp_path, *FAST)
    assert "final test accuracy" in proc.stdout
    [run] = run_dirs(tmp_path / "outputs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["epochs_completed"] == 2
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["train_images_per_s"] > 0
    # composed config and log file from Hydra
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "convtrain.log").read_text().strip()
    # checkpoints readable, without pickle
    from safetensors.numpy import load_file

    for which in ("last", "best"):
        tensors = load_file(str(run / "checkpoints" / f"{which}.safetensors"))
        assert tensors["conv1.weight"].shape == (16, 1, 3, 3)
        assert json.loads((run / "checkpoints" / f"{which}.json").read_text())["epoch"] >= 1
    # TensorBoard events readable by TensorBoard's own reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    [events_dir] = {p.parent for p in (run / "tensorboard").rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2] or [e.step for e in loss] == [0, 1]
    assert abs(loss[-1].value - metrics["train_loss"]) < 1e-5


def test_overrides_reach_the_model_and_optimizer(tmp_path):
    convtrain(tmp_path, "model.layers.conv1.filters=4", "model.layers.conv1.kernel_size=5",
              "optimizer.lr=0.05", "trainer.max_epochs=1")
    [run] = run_dirs(tmp_path / "outputs")
    from safetensors.numpy import load_file

    tensors = load_file(str(run / "checkpoints" / "last.safetensors"))
    assert tensors["conv1.weight"].shape == (4, 1, 5, 5)
    assert tensors["conv2.weight"].shape == (32, 4, 3, 3)


def test_init_dropout_and_weight_decay_overrides(tmp_path):
    convtrain(tmp_path, "model.init=xavier_uniform", "model.layers.drop1.p=0.3",
              "optimizer.weight_decay=1e-4", "trainer.max_epochs=1")
    [run] = run_dirs(tmp_path / "outputs")
    cfg = (run / ".hydra" / "config.yaml").read_text()
    assert "init: xavier_uniform" in cfg and "p: 0.3" in cfg and "weight_decay: 0.0001" in cfg


def test_same_seed_gives_identical_losses(tmp_path):
    convtrain(tmp_path, "seed=7", *FAST)
    convtrain(tmp_path, "seed=7", *FAST)
    runs = run_dirs(tmp_path / "outputs")
    assert len(runs) == 2
    a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy"):
        assert a[key] == b[key], key  # bitwise on NumPy


def test_different_seeds_differ(tmp_path):
    convtrain(tmp_path, "seed=1", "trainer.max_epochs=1")
    convtrain(tmp_path, "seed=2", "trainer.max_epochs=1")
    a, b = (json.loads((r / "metrics.json").read_text()) for r in run_dirs(tmp_path / "outputs"))
    assert a["train_loss"] != b["train_loss"]


def test_multirun_grid_gives_one_run_dir_per_job(tmp_path):
    proc = convtrain(tmp_path, "-m", "model.layers.conv1.filters=4,8", "seed=1,2", "trainer.max_epochs=1")
    runs = run_dirs(tmp_path / "multirun")
    assert len(runs) == 4, proc.stdout
    seen = set()
    from omegaconf import OmegaConf

    for r in runs:
        cfg = OmegaConf.load(r / ".hydra" / "config.yaml")
        seen.add((cfg.model.layers.conv1.filters, cfg.seed))
    assert seen == {(4, 1), (4, 2), (8, 1), (8, 2)}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.layers.conv1.filtrs=3", "model.layers.conv1.filtrs"),
        ("+model.layers.conv1.filtrs=3", r"model\.layers\.conv1.*filtrs.*did you mean 'filters'"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("model.layers.conv1.type=conv", r"model\.layers\.conv1.*Unknown layer type 'conv'"),
        ("model.layers.conv1.kernel_size=11 model.layers.conv1.padding=0", r"model\.layers\.conv1\.kernel_size: kernel 11x11.*8x8"),
        ("model.layers.conv1.kernel_size=4", r"model\.layers\.conv1.*same.*(even|odd)"),
        ("optimizer.lr=-1", r"optimizer\.lr"),
        ("data.name=nope", r"data\.name.*Unknown dataset 'nope'"),
        ("model.layers.fc2.units=7", r"fc2.*10"),
    ],
)
def test_bad_overrides_fail_before_training_with_the_key_named(tmp_path, override, expected):
    proc = convtrain(tmp_path, *override.split(), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    import re

    assert re.search(expected, out), out
    assert "Traceback" not in out, out
    assert not list((tmp_path / "outputs").rglob("metrics.json")), "training must not start"


def test_summary_task_prints_table_without_training(tmp_path):
    proc = convtrain(tmp_path, "task=summary")
    assert "conv1" in proc.stdout and "fc2" in proc.stdout
    assert not list(tmp_path.rglob("metrics.json"))


def test_lenet5_summary_on_28x28(tmp_path):
    # lenet5 needs 28x28 inputs; on 8x8 digits it must fail naming the layer
    proc = convtrain(tmp_path, "model=lenet5", "task=summary", check=False)
    assert proc.returncode != 0
    assert "model.layers.conv2" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_run_reaches_accuracy_bar(tmp_path):
    convtrain(tmp_path)
    [run] = run_dirs(tmp_path / "outputs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.97, metrics
