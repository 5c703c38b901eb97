"""Every experiment in experiments/ composes, describes itself, and the small ones train."""
from __future__ import annotations

import json
import math
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
#: the lessons re-run on 28x28 Fashion-MNIST (issue #14), sized for ~12 minutes on two cores
FMNIST_LESSONS = ["fmnist_stacked_vs_5x5", "fmnist_init_depth", "fmnist_filter_count"]
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
                                *LESSONS, *FMNIST_LESSONS}
    assert (Path(config_dir()) / "experiment").resolve() == EXPERIMENTS_DIR


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_prints_its_summary(name, tmp_path, capsys):
    text = (EXPERIMENTS_DIR / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# "), "first lines: package, then what it shows"
    cfg = make_cfg(f"+experiment={name}", "task=summary")
    params = cfg.hydra.sweeper.params
    if name in LESSONS + FMNIST_LESSONS:
        assert params, f"{name} is a sweep: it sets hydra.sweeper.params"
    with open_dict(cfg):
        del cfg["hydra"]
    # the summary needs the input shape only, not the data files
    run(cfg, run_dir=tmp_path)
    out = capsys.readouterr().out
    assert f"Model: {cfg.model.name}" in out and "Total params" in out


def sweep_jobs(name: str, skip: tuple[str, ...] = ()) -> list[list[str]]:
    """The overrides of each job of a lesson sweep (Hydra's basic sweeper: the product), without
    the keys in ``skip``."""
    params = OmegaConf.load(EXPERIMENTS_DIR / f"{name}.yaml").hydra.sweeper.params
    jobs = [[]]
    for key, values in params.items():
        if key not in skip:
            jobs = [job + [f"{key}={value}"] for job in jobs for value in str(values).split(",")]
    return jobs


@pytest.mark.slow  # composing a config takes ~0.5 s; 14 models are built and summarised
@pytest.mark.parametrize("name", FMNIST_LESSONS)
def test_every_model_of_a_fashion_mnist_lesson_builds_for_28x28(name, tmp_path, capsys):
    assert len(sweep_jobs(name)) == {"fmnist_stacked_vs_5x5": 6, "fmnist_init_depth": 6,
                                     "fmnist_filter_count": 18}[name]
    jobs = sweep_jobs(name, skip=("seed",))  # the seed changes the weights, not the model
    for overrides in jobs:
        cfg = make_cfg(f"+experiment={name}", "task=summary", *overrides)
        # the real images, a stratified subset (the sizing), no end-of-run responses
        assert cfg.data.name == "fashion_mnist" and cfg.data.subset
        assert cfg.logger.responses is False
        with open_dict(cfg):
            del cfg["hydra"]
        run(cfg, run_dir=tmp_path)
        out = capsys.readouterr().out
        assert "Input shape:          (1, 28, 28)" in out, overrides
        for override in overrides:  # each job builds what its overrides ask for
            key, value = override.split("=")
            if key == "model":
                assert f"Model: {value}" in out
            elif key == "model.layers.conv1.filters":
                [conv1] = [line for line in out.splitlines() if line.startswith("conv1 ")]
                assert f" {value}@3x3" in conv1
    if name == "fmnist_init_depth":
        assert {job[1] for job in jobs} == {"model.init=he_normal", "model.init=xavier_normal",
                                            "model.init=lecun_normal"}


@pytest.mark.slow  # the first block-built model without BN, trained through the CLI
def test_residual_deep_trains_in_the_digits_init_lesson(tmp_path):
    convtrain(tmp_path, "+experiment=init_he_vs_xavier", "model=residual_deep", *TINY)
    [metrics] = tmp_path.rglob("metrics.json")
    result = json.loads(metrics.read_text())
    # no BN and He init: the first loss is above ln 10 (large initial logits), but finite
    assert result["epochs_completed"] == 1 and math.isfinite(result["train_loss"])


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
