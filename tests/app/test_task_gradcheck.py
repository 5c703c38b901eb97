"""``convtrain task=gradcheck``: through the command line on small_cnn (digits), cifar_cnn
(random inputs, no data files) and lenet5 (Fashion-MNIST, slow); a broken backward pass gives
exit status 1 with the failing tensor named; bad settings one line, exit 2.

References: the tensors a report must cover are the model's ``state_dict`` names (the model
built by hand from the same config); the broken backward pass scales one gradient by 1.01,
a relative error of ~1e-2 whatever the finite differences say.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.core.hydra_config import HydraConfig

from convtrain.app import cli
from convtrain.nn.layers.dense import Dense
from tests.inference.conftest import FASHION_MNIST_DIR, run_convtrain
from tests.shipped_models import shipped_config


def parameter_names(model: str, input_shape: tuple[int, ...]) -> list[str]:
    """The model's parameter tensors, from the shipped config built by hand."""
    from convtrain.nn.model import build_model

    spec = shipped_config(model)
    built = build_model(spec, input_shape, seed=0, dtype=np.float64)
    return [f"{name}.{key}" for name, layer in built.layers.items() for key in layer.params]


def check_report(run_dir: Path, stdout: str, model: str, input_shape: tuple[int, ...],
                 samples: int = 2) -> dict:
    """The printed and written report: every parameter and the input checked, passed."""
    record = json.loads((run_dir / "gradcheck.json").read_text())
    text = (run_dir / "gradcheck.txt").read_text()
    assert text in stdout and record["verdict"] in text
    assert record["passed"] and record["exit_status"] == 0 and record["model"] == model
    names = [t["name"] for t in record["tensors"]]
    assert names == ["input", *parameter_names(model, input_shape)]
    assert record["tensors"][0]["shape"] == [samples, *input_shape]
    for tensor in record["tensors"]:
        assert tensor["worst_error"] <= record["settings"]["threshold"] == 1e-6
        assert tensor["checked"] == min(32, int(np.prod(tensor["shape"])))
    assert record["verdict"].startswith("gradcheck passed")
    return record


def test_small_cnn_on_digits(tmp_path):
    proc = run_convtrain(tmp_path, "task=gradcheck", "hydra.run.dir=gc")
    record = check_report(tmp_path / "gc", proc.stdout, "small_cnn", (1, 8, 8))
    assert "training images of 'digits'" in record["inputs"]
    assert record["settings"] == {"samples": 2, "inputs": "data", "eps": 1e-6,
                                  "threshold": 1e-6, "entries_per_tensor": 32,
                                  "input_noise": 1e-3, "seed": 0}


@pytest.mark.slow  # ~10 s on a loaded 2-core machine
def test_cifar_cnn_on_random_inputs_needs_no_data_files(tmp_path):
    proc = run_convtrain(tmp_path, "task=gradcheck", "model=cifar_cnn", "data=cifar10",
                         f"data.root={tmp_path / 'nowhere'}", "gradcheck.inputs=random",
                         "hydra.run.dir=gc")
    record = check_report(tmp_path / "gc", proc.stdout, "cifar_cnn", (3, 32, 32))
    assert "gradcheck.inputs=random" in record["inputs"] and "random" in proc.stdout
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_lenet5_on_fashion_mnist(tmp_path):
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    proc = run_convtrain(tmp_path, "task=gradcheck", "model=lenet5", "data=fashion_mnist",
                         f"data.root={FASHION_MNIST_DIR}", "gradcheck.samples=3",
                         "hydra.run.dir=gc")
    record = check_report(tmp_path / "gc", proc.stdout, "lenet5", (1, 28, 28), samples=3)
    assert "training images of 'fashion_mnist'" in record["inputs"]


@pytest.fixture
def convtrain_in_process(monkeypatch, tmp_path):
    """``call(*args)`` runs the CLI in this process in ``tmp_path``; returns the exit status."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr("convtrain.app.sweep._sweep", None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def call(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["convtrain", *args])
        try:
            cli.main()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0

    yield call
    HydraConfig.instance().cfg = None  # as tests/app/test_cli_errors.py: no stale job config
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_a_broken_backward_pass_is_exit_status_1_naming_the_tensor(convtrain_in_process,
                                                                  monkeypatch, tmp_path, capsys):
    backward = Dense.backward

    def off_by_one_percent(self, dy):  # the weight gradient of fc2 only
        dx = backward(self, dy)
        if self.out_features == 10:
            self.grads["weight"] = self.grads["weight"] * 1.01
        return dx

    monkeypatch.setattr(Dense, "backward", off_by_one_percent)
    assert convtrain_in_process("task=gradcheck", "hydra.run.dir=gc") == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("convtrain: gradcheck FAILED: fc2.weight ")
    assert "fc1.weight" not in err and str(tmp_path / "gc" / "gradcheck.txt") in err
    record = json.loads((tmp_path / "gc" / "gradcheck.json").read_text())
    assert not record["passed"] and record["exit_status"] == 1
    failed = {t["name"]: t for t in record["tensors"] if not t["passed"]}
    assert list(failed) == ["fc2.weight"]
    assert failed["fc2.weight"]["worst_error"] == pytest.approx(0.01 / 1.01, rel=1e-3)
    assert "FAIL" in out


@pytest.mark.parametrize("override, expected", [
    ("gradcheck.eps=0", "gradcheck.eps: must be > 0, got 0"),
    ("gradcheck.threshold=-1", "gradcheck.threshold: must be > 0"),
    ("gradcheck.samples=0", "gradcheck.samples: expected a positive integer, got 0"),
    ("gradcheck.entries_per_tensor=0", "gradcheck.entries_per_tensor: expected a positive"),
    ("gradcheck.input_noise=-0.1", "gradcheck.input_noise: must be >= 0"),
    ("gradcheck.inputs=files", "gradcheck.inputs"),
    ("gradcheck.samples=5000", "gradcheck.samples: 5000 is more than the"),
])
def test_bad_settings_are_one_line(convtrain_in_process, capsys, override, expected):
    assert convtrain_in_process("task=gradcheck", override, "hydra.run.dir=gc") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("convtrain: error: ") and expected in err, err


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_failed_check_in_a_sweep_is_a_failed_job(convtrain_in_process, monkeypatch, tmp_path,
                                                   capsys):
    backward = Dense.backward

    def off(self, dy):
        dx = backward(self, dy)
        self.grads["bias"] = self.grads["bias"] + 1e-3
        return dx

    monkeypatch.setattr(Dense, "backward", off)
    assert convtrain_in_process("-m", "task=gradcheck", "gradcheck.samples=1,2",
                                "hydra.sweep.dir=sweep") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "2 of 2" in err, err
    for job in ("0", "1"):
        assert "gradcheck FAILED: fc1.bias" in (tmp_path / "sweep" / job / "error.txt").read_text()
