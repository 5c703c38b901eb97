"""``convtrain task=eval``: end to end through the command line on trained runs (digits here;
cifar_cnn on synthetic CIFAR-10 and lenet5 on Fashion-MNIST are slow), and in process for the
data rule and the refusals (the one-line, exit-2 path of the CLI is checked on a few of them).

References: the training run's own metrics (its test accuracy, its checkpoint epoch's
validation metrics) and scikit-learn (tests/inference/test_evaluate.py covers the formulas).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra import compose, initialize_config_dir

from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.errors import ConfigError
from convtrain.inference import load_run
from convtrain.training.checkpoint import load_checkpoint, save_checkpoint
from tests.inference import conftest as trained_runs
from tests.inference.conftest import DIGITS_SEED, copy_run, run_convtrain, write_synthetic_cifar

# the session's trained runs, shared with tests/inference/ (each trained once per session)
digits_run, cifar_root = trained_runs.digits_run, trained_runs.cifar_root
cifar_run, fmnist_run = trained_runs.cifar_run, trained_runs.fmnist_run

RESULTS = ("metrics.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png")


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Hash of every file of the run outside its eval/ folder."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*"))
            if p.is_file() and p.relative_to(run_dir).parts[0] != "eval"}


def eval_in_process(run_dir: Path, out: Path, *overrides: str) -> dict:
    """``task=eval`` through :func:`convtrain.app.run.run` (the config carries its overrides,
    as under the CLI); returns the written metrics.json."""
    args = ["task=eval", f"trainer.resume={run_dir}", *overrides]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=args, return_hydra_config=True)
    run(cfg, run_dir=out)
    return json.loads((out / "metrics.json").read_text())


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_eval_on_digits_from_the_command_line(digits_run, tmp_path):
    before = fingerprint(digits_run)
    proc = run_convtrain(tmp_path, "task=eval", f"trainer.resume={digits_run}", "checkpoint=last")
    out = digits_run / "eval"
    assert all((out / name).is_file() for name in RESULTS)
    assert (out / ".hydra" / "config.yaml").is_file()  # Hydra's files go to eval/ too
    metrics = json.loads((out / "metrics.json").read_text())
    run_metrics = json.loads((digits_run / "metrics.json").read_text())
    # the last checkpoint on the run's own test split: the trainer's own test accuracy
    assert metrics["accuracy"] == run_metrics["test_accuracy"]
    assert metrics["loss"] == pytest.approx(run_metrics["test_loss"], rel=1e-5)
    assert (metrics["split"], metrics["dataset"], metrics["num_images"]) == ("test", "digits", 360)
    assert metrics["checkpoint"] == "checkpoints/last.safetensors"  # relative to RUN_DIR
    printed = re.search(r"accuracy (\d\.\d{4}) \((\d+)/(\d+)\)", proc.stdout)
    assert printed and float(printed[1]) == round(metrics["accuracy"], 4)
    assert int(printed[2]) == metrics["correct"] and int(printed[3]) == metrics["num_images"]
    assert "confusion matrix (rows: true class" in proc.stdout

    # again, on another split: the results are replaced, never refused
    run_convtrain(tmp_path, "task=eval", f"trainer.resume={digits_run}", "eval.split=val")
    again = json.loads((out / "metrics.json").read_text())
    assert (again["split"], again["num_images"]) == ("val", 144)
    assert again["checkpoint"] == "checkpoints/best.safetensors"  # best by default
    assert fingerprint(digits_run) == before  # checkpoints, metrics.json, .hydra, log untouched


def test_val_split_is_the_runs_validation_split(digits_run, tmp_path):
    trained = load_run(digits_run, checkpoint="best")
    metrics = eval_in_process(digits_run, tmp_path, "eval.split=val")
    assert metrics["epoch"] == trained.epoch
    assert metrics["accuracy"] == trained.metrics["val_accuracy"]
    assert metrics["loss"] == pytest.approx(trained.metrics["val_loss"], rel=1e-5)


def test_data_overrides_apply_on_top_of_the_runs_data(digits_run, tmp_path):
    metrics = eval_in_process(digits_run, tmp_path, "eval.split=train", "data.subset=300")
    # 300 stratified training images, 10% of them held out for validation: 270 train
    assert metrics["num_images"] == 270 and metrics["data"]["subset"] == 300
    assert metrics["data"]["val_fraction"] == 0.1  # from the run
    own = eval_in_process(digits_run, tmp_path, "eval.split=val")
    assert own["seed"] == DIGITS_SEED != 0  # the run's seed, from its checkpoint
    seed = eval_in_process(digits_run, tmp_path, "eval.split=val", "seed=5")
    assert seed["seed"] == 5 and seed["num_images"] == 144
    assert seed["confusion_matrix"] != own["confusion_matrix"]


@pytest.mark.parametrize("task", ["eval", "predict"])
def test_model_overrides_are_refused_before_anything_is_written(task, digits_run, tmp_path):
    """The model comes from the checkpoint: a model override would be silently ignored."""
    run_dir = copy_run(digits_run, tmp_path)
    proc = run_convtrain(tmp_path, f"task={task}", f"trainer.resume={run_dir}",
                         "model.layers.conv1.filters=8", f"predict.inputs={tmp_path}", check=False)
    assert one_line_error(proc) == (
        f"convtrain: error: model.layers.conv1.filters=8: task={task} cannot change the model: "
        "the model comes from the checkpoint of trainer.resume (drop the override, or train a "
        "run with it)")
    assert not (run_dir / task).exists() and not (tmp_path / "outputs").exists()


def test_eval_batch_size_defaults_like_the_trainer(tmp_path):
    """eval.batch_size unset: the run's trainer.eval_batch_size, else 4 x its batch_size, else
    4 x the trainer's default batch_size -- what a Trainer built with those settings uses."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from convtrain.app.tasks.eval import batch_size
    from convtrain.training.options import TRAINER_DEFAULTS
    cfg = OmegaConf.create({"eval": {"batch_size": None}})
    for trainer, expected in [({}, 4 * TRAINER_DEFAULTS.batch_size), ({"batch_size": 10}, 40),
                              ({"batch_size": 10, "eval_batch_size": 7}, 7)]:
        assert batch_size(cfg, SimpleNamespace(config={"trainer": trainer})) == expected
    assert batch_size(OmegaConf.create({"eval": {"batch_size": 5}}),
                      SimpleNamespace(config={"trainer": {}})) == 5


def test_refusals_name_the_problem(digits_run, cifar_root, tmp_path):
    with pytest.raises(ConfigError, match=r"dataset 'cifar10' has images of shape \(3, 32, 32\) "
                                          r"but the model of '.*' takes \(1, 8, 8\)"):
        eval_in_process(digits_run, tmp_path, "data=cifar10", f"data.root={cifar_root}")
    with pytest.raises(ConfigError, match=r"eval.split=val: the val split of 'digits' is empty"):
        eval_in_process(digits_run, tmp_path, "eval.split=val", "data.val_fraction=0")

    no_best = copy_run(digits_run, tmp_path / "no_best")
    for suffix in (".safetensors", ".json"):
        (no_best / "checkpoints" / f"best{suffix}").unlink()
    with pytest.raises(ConfigError, match=r"holds no best checkpoint .*set checkpoint=last"):
        eval_in_process(no_best, tmp_path)
    assert eval_in_process(no_best, tmp_path, "checkpoint=last")["epoch"] == 2

    # a checkpoint whose tensors do not fit its architecture (conv1 with 8 filters, not 16)
    other = copy_run(digits_run, tmp_path / "other")
    ckpt = load_checkpoint(other / "checkpoints" / "best.safetensors")
    config = yaml.safe_load(ckpt.meta["config"])
    config["model"]["layers"]["conv1"]["filters"] = 8
    meta = {k: v for k, v in ckpt.meta.items() if k != "format"}
    save_checkpoint(other / "checkpoints", "best", ckpt.model_state, ckpt.optimizer_state,
                    {**meta, "config": yaml.safe_dump(config, sort_keys=False)})
    with pytest.raises(ConfigError, match=r"best.safetensors' does not fit the model of its own "
                                          r"config: .*conv1"):
        eval_in_process(other, tmp_path)


@pytest.mark.slow  # > 2 s: out of the fast suite
@pytest.mark.parametrize("case", ["no resume", "missing run", "no checkpoints", "data shape"])
def test_command_line_refusals_are_one_line(case, digits_run, cifar_root, tmp_path):
    empty = tmp_path / "empty_run"
    empty.mkdir()
    args = {"no resume": [],
            "missing run": [f"trainer.resume={tmp_path / 'nope'}"],
            "no checkpoints": [f"trainer.resume={empty}"],
            "data shape": [f"trainer.resume={digits_run}", "data=cifar10",
                           f"data.root={cifar_root}", "hydra.run.dir=" + str(tmp_path / "e")],
            }[case]
    line = one_line_error(run_convtrain(tmp_path, "task=eval", *args, check=False))
    expected = {"no resume": "task=eval works on a trained run: set trainer.resume=RUN_DIR",
                "missing run": f"trainer.resume: '{tmp_path / 'nope'}' does not exist",
                "no checkpoints": f"trainer.resume: '{empty}' holds no best checkpoint",
                "data shape": "has images of shape (3, 32, 32) but the model"}[case]
    assert expected in line
    assert not (tmp_path / "nope").exists()  # a mistyped run directory is not created
    assert list(empty.iterdir()) == []
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_eval_on_cifar_and_on_another_copy_of_its_dataset(cifar_run, tmp_path):
    run_metrics = json.loads((cifar_run / "metrics.json").read_text())
    proc = run_convtrain(tmp_path, "task=eval", f"trainer.resume={cifar_run}", "checkpoint=last")
    metrics = json.loads((cifar_run / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == run_metrics["test_accuracy"] and metrics["num_images"] == 100
    assert "airplane" in proc.stdout and metrics["class_names"][9] == "truck"
    # data=NAME: the shipped cifar10 config with data.root on top, not the run's data config
    other = write_synthetic_cifar(tmp_path / "other", n_train=50, n_test=30, seed=5)
    run_convtrain(tmp_path, "task=eval", f"trainer.resume={cifar_run}", "data=cifar10",
                  f"data.root={other}")
    metrics = json.loads((cifar_run / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 30 and metrics["data"]["root"] == str(other)
    trained = load_run(cifar_run)  # best, the default
    expected = trained.predict(_cifar_test_images(other))
    assert metrics["accuracy"] == pytest.approx(np.mean(expected == _cifar_test_labels(other)))
    assert trained.preprocessing.as_dict() == metrics["preprocessing"]  # the checkpoint's


def _cifar_records(root: Path) -> np.ndarray:
    data = (root / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, 3073)


def _cifar_test_images(root: Path) -> np.ndarray:
    return _cifar_records(root)[:, 1:].reshape(-1, 3, 32, 32)


def _cifar_test_labels(root: Path) -> np.ndarray:
    return _cifar_records(root)[:, 0].astype(np.int64)


@pytest.mark.slow
def test_eval_on_fashion_mnist(fmnist_run, tmp_path):
    run_metrics = json.loads((fmnist_run / "metrics.json").read_text())
    proc = run_convtrain(tmp_path, "task=eval", f"trainer.resume={fmnist_run}", "checkpoint=last")
    metrics = json.loads((fmnist_run / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 10_000 and metrics["dataset"] == "fashion_mnist"
    assert metrics["accuracy"] == run_metrics["test_accuracy"]
    assert "T-shirt/top" in proc.stdout
