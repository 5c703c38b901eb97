"""The configs ship inside the wheel: an installed convtrain runs from any directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_package_and_config_group_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools_cfg["packages"])
    # every directory of the package is one (namespace packages included, like data/resources)
    code = {".".join(d.relative_to(REPO).parts) for d in [REPO / "convtrain",
                                                         *(REPO / "convtrain").rglob("*")]
            if d.is_dir() and d.name != "__pycache__"}
    groups = {f"convtrain.configs.{p.name}" for p in (REPO / "configs").iterdir() if p.is_dir()}
    expected = code | {"convtrain.configs"} | groups
    assert not expected - listed, f"add to [tool.setuptools] packages: {sorted(expected - listed)}"
    assert setuptools_cfg["package-dir"] == {
        "convtrain.configs": "configs", "convtrain.configs.experiment": "experiments"}


def run(cmd: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HYDRA_FULL_ERROR", "PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_from_an_unrelated_directory(tmp_path):
    # build from a copy, so that build/ and *.egg-info never land in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("convtrain", "configs", "experiments"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=ignore)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)],
        cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("convtrain-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path)

    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = run([str(bin_dir / "python"), "-c",
                "import convtrain.app.cli as c; print(c.__file__); print(c.config_dir())"], cwd=work)
    module_file, configs = proc.stdout.split()
    assert str(env_dir) in module_file and str(env_dir) in configs  # not the checkout
    assert (Path(configs) / "experiment" / "digits_cnn.yaml").is_file()

    proc = run([str(bin_dir / "convtrain"), "task=summary"], cwd=work)
    assert "Model: small_cnn" in proc.stdout
    proc = run([str(bin_dir / "convtrain"), "+experiment=stacked_3x3_vs_5x5", "task=summary"],
               cwd=work)
    assert "Model: stacked_3x3" in proc.stdout
    run([str(bin_dir / "convtrain"), "trainer.max_epochs=1", "data.subset=300",
         "logger.png=false"], cwd=work)
    [metrics] = (work / "outputs").rglob("metrics.json")
    assert json.loads(metrics.read_text())["epochs_completed"] == 1
    assert list((work / "outputs").rglob("events.out.tfevents.*"))

    # a user's own config directory next to the shipped one
    conf = work / "conf"
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "tiny.yaml").write_text(
        "name: tiny\nlayers:\n  flat: {type: flatten}\n  fc1: {type: dense, units: 10}\n")
    proc = run([str(bin_dir / "convtrain"), "--config-dir", "conf", "model=tiny", "task=summary"],
               cwd=work)
    assert "Model: tiny" in proc.stdout
    run([str(bin_dir / "convtrain-report"), "outputs"], cwd=work)
