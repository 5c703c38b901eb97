"""Every experiment in experiments/ composes, describes itself, and the small ones train."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from convtrain.app.cli import config_dir
from convtrain.app.schema import register_configs
from convtrain.app.run import run

EXPERIMENTS_DIR = Path(__file__).resolve().parents[2] / "experiments"
EXPERIMENTS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
LESSONS = ["filter_bank_vs_learned", "stacked_3x3_vs_5x5", "init_he_vs_xavier",
           "filter_count_sweep"]
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
TINY = ["trainer.max_epochs=1", "data.subset=300", "logger.tensorboard=false", "logger.png=false",
        "trainer.checkpoint=false"]


def make_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def convtrain(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_experiment_group_is_the_experiments_directory():
    assert set(EXPERIMENTS) >= {"digits_cnn", "mnist_lenet5", "fashion_mnist_cnn", "cifar10_small",
                                *LESSONS}
    assert (Path(config_dir()) / "experiment").resolve() == EXPERIMENTS_DIR


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_prints_its_summary(name, tmp_path, capsys):
    text = (EXPERIMENTS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# "), "first lines: package, then what it shows"
    cfg = make_cfg(f"+experiment={name}", "task=summary")
    params = cfg.hydra.sweeper.params
    if name in LESSONS:
        assert params, f"{name} is a sweep: it sets hydra.sweeper.params"
    with open_dict(cfg):
        del cfg["hydra"]
    # the summary needs the input shape only, not the data files
    run(cfg, run_dir=tmp_path)
    out = capsys.readouterr().out
    assert f"Model: {cfg.model.name}" in out and "Total params" in out


def test_digits_cnn_trains(tmp_path):
    convtrain(tmp_path, "+experiment=digits_cnn", *TINY)
    [metrics] = tmp_path.rglob("metrics.json")
    assert json.loads(metrics.read_text())["epochs_completed"] == 1


@pytest.mark.slow  # reading the 70,000 images takes ~10 s
@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason=f"Fashion-MNIST not in {FASHION_MNIST}")
def test_fashion_mnist_cnn_trains(tmp_path):
    convtrain(tmp_path, "+experiment=fashion_mnist_cnn", *TINY)
    [metrics] = tmp_path.rglob("metrics.json")
    assert json.loads(metrics.read_text())["test_accuracy"] > 0.2


@pytest.mark.slow
@pytest.mark.parametrize("name", LESSONS)
def test_lesson_sweeps_run(name, tmp_path):
    convtrain(tmp_path, "-m", f"+experiment={name}", *TINY)
    params = OmegaConf.load(EXPERIMENTS_DIR / f"{name}.yaml").hydra.sweeper.params
    expected = 1
    for values in params.values():
        expected *= len(str(values).split(","))
    assert len(list(tmp_path.rglob("metrics.json"))) == expected
