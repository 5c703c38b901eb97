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

    # one run named by the overrides, its train/val/test curves in child runs
    events_dirs = {p.parent for p in (run / "tensorboard").rglob("events.out.tfevents.*")}
    [named] = {d.relative_to(run / "tensorboard").parts[0] for d in events_dirs}
    assert "trainer.max_epochs=" in named
    acc = EventAccumulator(str(run / "tensorboard" / named / "train"),
                           size_guidance={"scalars": 0})
    acc.Reload()
    loss = acc.Scalars("epoch/loss")
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
              "optimizer.weight_decay=1e-4", "task=summary")
    [run] = [p.parent.parent for p in (tmp_path / "outputs").rglob(".hydra/config.yaml")]
    cfg = (run / ".hydra" / "config.yaml").read_text()
    assert "init: xavier_uniform" in cfg and "p: 0.3" in cfg and "weight_decay: 0.0001" in cfg


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_same_seed_gives_identical_losses(tmp_path):
    convtrain(tmp_path, "seed=7", "data.subset=400", *FAST)
    convtrain(tmp_path, "seed=7", "data.subset=400", *FAST)
    runs = run_dirs(tmp_path / "outputs")
    assert len(runs) == 2
    a, b = (json.loads((r / "metrics.json").read_text()) for r in runs)
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy", "val_accuracy"):
        assert a[key] == b[key], key  # bitwise on NumPy


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_different_seeds_differ(tmp_path):
    convtrain(tmp_path, "seed=1", "trainer.max_epochs=1", "data.subset=400")
    convtrain(tmp_path, "seed=2", "trainer.max_epochs=1", "data.subset=400")
    a, b = (json.loads((r / "metrics.json").read_text()) for r in run_dirs(tmp_path / "outputs"))
    assert a["train_loss"] != b["train_loss"]


# Each class of mistake through the real command: the exact key named, one line on stderr, exit
# status 2, no traceback, no training started. (test_config.py checks many more messages in
# process.)
#: every 4th case runs in the fast suite, the rest only in the full one (each is a ~1.3 s
#: subprocess; test_config.py checks the messages in process)
BAD_OVERRIDES = [
        # unknown keys (typos) with the closest valid key
        ("optimizer.lrr=0.1", "convtrain: error: optimizer.lrr: unknown key; did you mean 'optimizer.lr'?"),
        ("+trainer.max_epoch=3", "convtrain: error: trainer.max_epoch: unknown key; did you mean 'trainer.max_epochs'?"),
        ("+model.layers.conv1.filtrs=3", "convtrain: error: model.layers.conv1.filtrs: unknown key for layer type 'conv2d'; did you mean 'model.layers.conv1.filters'?"),
        ("optimizer=adamm", "convtrain: error: optimizer=adamm: no option 'adamm' in config group 'optimizer' (options: adam, adamw, rmsprop, sgd); did you mean 'adam'?"),
        # wrong types
        ("trainer.max_epochs=abc", "convtrain: error: trainer.max_epochs: Value 'abc' of type 'str' could not be converted to Integer"),
        # out of range
        ("model.layers.drop1.p=1.5", "convtrain: error: model.layers.drop1.p: must be in [0, 1), got 1.5"),
        ("model.layers.conv1.stride=0", "convtrain: error: model.layers.conv1.stride: must be >= 1, got 0"),
        ("optimizer.lr=-1", "convtrain: error: optimizer.lr: must be > 0, got -1.0"),
        ("trainer.batch_size=0", "convtrain: error: trainer.batch_size: expected a positive integer, got 0"),
        ("data.val_fraction=1.5", "convtrain: error: data.val_fraction: expected a number in [0, 1)"),
        # impossible shapes and positions
        ("model.layers.fc2.units=7", "model.layers.fc2.units=10"),
        ("+model.layers.drop2={type:dropout,p:0.5,after:fc9}", "convtrain: error: model.layers.drop2.after: unknown layer 'fc9'"),
        ("model.layers.drop2={type:dropout", "convtrain: error: cannot parse override"),
        # augmentation keys are typed too (they used to crash inside Hydra when augment was null)
        ("data.augment.flip=1", "convtrain: error: data.augment.flip: unknown key"),
        ("data.augment.random_crop=abc", "convtrain: error: data.augment.random_crop: Value 'abc'"),
        # checked before the data is loaded, not after
        ("logger.kernel_scaling=log", "convtrain: error: logger.kernel_scaling: expected one of fixed, layer, per_filter"),
        ("trainer.resume=/nonexistent", "convtrain: error: trainer.resume: checkpoint not found: '/nonexistent'"),
        ("model.layers={}", "convtrain: error: model.layers: 'model.layers={}' merges an empty mapping and changes nothing"),
        ("engine.num_threads=0", "convtrain: error: engine.num_threads: expected a positive integer, got 0"),
]


@pytest.mark.parametrize(
    ("override", "expected"),
    [pytest.param(*case, marks=() if index % 4 == 0 else pytest.mark.slow)
     for index, case in enumerate(BAD_OVERRIDES)],
)
def test_bad_overrides_fail_before_training_with_the_key_named(tmp_path, override, expected):
    proc = convtrain(tmp_path, *override.split(), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert expected in proc.stderr, out
    assert len(proc.stderr.strip().splitlines()) == 1, out  # one message
    assert "Traceback" not in out and "HYDRA_FULL_ERROR" not in out, out
    assert not list(tmp_path.rglob("metrics.json")), "training must not start"


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_full_error_shows_the_traceback(tmp_path):
    env = {"HYDRA_FULL_ERROR": "1"}
    for override in ("optimizer.lrr=0.1", "optimizer.lr=-1"):
        proc = subprocess.run([sys.executable, "-m", "convtrain", override], cwd=tmp_path,
                              env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode != 0
        assert "Traceback" in proc.stderr, proc.stderr


def test_a_failed_run_records_its_error(tmp_path):
    convtrain(tmp_path, "optimizer.lr=-1", check=False)
    [run] = [p.parent.parent for p in (tmp_path / "outputs").rglob(".hydra/config.yaml")]
    assert (run / "error.txt").read_text().strip() == "optimizer.lr: must be > 0, got -1.0"
    assert "optimizer.lr: must be > 0" in (run / "convtrain.log").read_text()


def test_summary_shows_inserted_and_removed_layers_in_order(tmp_path):
    proc = convtrain(tmp_path, "task=summary", "+model.layers.drop2={type:dropout,p:0.5,after:fc1}",
                     "+model.layers.bn1={type:batchnorm2d,before:relu1}", "~model.layers.relu2",
                     "model.layers.conv1.filters=8")
    names = [line.split()[0] for line in proc.stdout.splitlines()
             if line.split() and line.split()[0] in
             {"conv1", "bn1", "relu1", "pool1", "conv2", "relu2", "pool2", "flat", "fc1", "drop2",
              "relu3", "drop1", "fc2"}]
    assert names == ["conv1", "bn1", "relu1", "pool1", "conv2", "pool2", "flat", "fc1", "drop2",
                     "relu3", "drop1", "fc2"]
    assert "8@3x3" in proc.stdout


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_user_config_dir_adds_models_and_experiments(tmp_path):
    conf = tmp_path / "my_configs"
    (conf / "model").mkdir(parents=True)
    (conf / "experiment").mkdir()
    (conf / "model" / "mine.yaml").write_text(
        "name: mine\nlayers:\n"
        "  conv1: {type: conv2d, filters: 4, kernel_size: 3, padding: same}\n"
        "  relu1: {type: relu}\n  flat: {type: flatten}\n  fc1: {type: dense, units: 10}\n")
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: mine\n"
        "trainer:\n  max_epochs: 1\n")
    proc = convtrain(tmp_path, "--config-dir", str(conf), "+experiment=mine", "task=summary")
    assert "Model: mine" in proc.stdout and "4@3x3" in proc.stdout
    proc = convtrain(tmp_path, f"hydra.searchpath=[file://{conf}]", "model=mine", "task=summary")
    assert "Model: mine" in proc.stdout


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


def test_augmentation_can_be_switched_on_from_the_command_line(tmp_path):
    convtrain(tmp_path, "trainer.max_epochs=1", "data.augment.random_crop=1",
              "data.augment.horizontal_flip=true")
    [run] = run_dirs(tmp_path / "outputs")
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert cfg.data.augment.random_crop == 1 and cfg.data.augment.horizontal_flip is True


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_help_lists_only_the_user_choices(tmp_path):
    from convtrain.app.cli import config_dir
    from convtrain.optim import OPTIMIZERS, SCHEDULES

    out = convtrain(tmp_path, "--help").stdout
    section = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    listed = {}
    for line in section.splitlines():
        group, sep, options = line.partition(": ")
        if sep and "(" not in group:
            listed[group] = options.split(", ")
    assert listed["optimizer"] == OPTIMIZERS.names()  # no schema_* entries
    assert listed["scheduler"] == SCHEDULES.names()
    # every group lists exactly the YAML files of its folder (the user's choices)
    configs = Path(config_dir())
    assert set(listed) == {p.name for p in configs.iterdir() if p.is_dir() and p.name != "hydra"}
    for group, options in listed.items():
        assert options == sorted(p.stem for p in (configs / group).glob("*.yaml")), group
