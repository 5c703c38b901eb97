"""``task=export`` end to end: a trained run's export, checked at export time, loads in
onnxruntime (or runs in PyTorch) and gives the trained model's logits on raw pixels. In process
on digits (fast); through the command line on digits, on cifar_cnn with synthetic CIFAR-10 and on
lenet5 with Fashion-MNIST (slow; the session's shared runs of tests/inference/conftest.py).

The reference is ``convtrain.load_run`` (the model as training left it, on raw pixels) and the
dataset's own files, read here independently of the task."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.data import DATASETS, StorageOptions
from convtrain.data.digits import read_digits
from convtrain.errors import ConfigError, DataError
from convtrain.inference import load_run
from tests.inference import conftest as trained_runs
from tests.inference.conftest import FASHION_MNIST_DIR, copy_run, run_convtrain

ort = pytest.importorskip("onnxruntime")

# the session's trained runs, shared with tests/inference/ (each trained once per session)
digits_run, cifar_root = trained_runs.digits_run, trained_runs.cifar_root
cifar_run, fmnist_run = trained_runs.cifar_run, trained_runs.fmnist_run

TOLERANCE = 1e-5
FIGURE = re.compile(r"^(onnxruntime|PyTorch) vs convtrain on (\d+) test images: max abs logit "
                    r"difference (\S+) \(largest \|logit\| (\S+), allowed (\S+)\)$", re.M)


def compose_run(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def export_in_process(trained: Path, *overrides: str) -> Path:
    """``task=export`` on ``trained`` as the CLI runs it, in RUN_DIR/export."""
    run_dir = trained / "export"
    run(compose_run("task=export", f"trainer.resume={trained}", *overrides), run_dir=run_dir)
    return run_dir


def onnx_logits(path: Path, raw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"pixels": raw.astype(np.float32)})[0]


@pytest.fixture(scope="module")
def trained(digits_run, tmp_path_factory) -> Path:
    """A private copy of the session's digits run (small_cnn, 2 epochs): these tests also
    leave damaged exports in its export/ folder."""
    return copy_run(digits_run, tmp_path_factory.mktemp("export_run"))


def test_onnx_export_gives_the_trained_models_logits_on_raw_pixels(trained, capsys):
    export_dir = export_in_process(trained)
    out = capsys.readouterr().out
    raw = read_digits(None).test.x  # 0..16, as the dataset stores them
    exported = onnx_logits(export_dir / "model.onnx", raw)
    expected = load_run(trained).logits(raw)
    assert float(np.abs(exported - expected).max()) <= TOLERANCE
    assert np.array_equal(exported.argmax(axis=1), expected.argmax(axis=1))

    runtime, samples, figure, largest, allowed = FIGURE.search(out).groups()
    assert runtime == "onnxruntime" and int(samples) == 256 and float(figure) <= TOLERANCE
    assert float(allowed) == pytest.approx(TOLERANCE * max(1.0, float(largest)), rel=0.05)
    record = json.loads((export_dir / "export.json").read_text())["onnx"]
    assert record["files"] == ["model.onnx"] and record["opset"] == 17
    assert record["check"]["max_abs_difference"] == pytest.approx(float(figure), rel=1e-2)
    assert record["checkpoint"] == "checkpoints/best.safetensors"  # relative to RUN_DIR
    assert record["class_names"] == [str(d) for d in range(10)]
    assert record["preprocessing"]["pixel_max"] == 16.0


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_torch_export_gives_the_trained_models_logits(trained, capsys):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    export_dir = export_in_process(trained, "export.format=torch", "checkpoint=last")
    runtime, _, figure, _, _ = FIGURE.search(capsys.readouterr().out).groups()
    assert runtime == "PyTorch" and float(figure) <= TOLERANCE
    namespace: dict = {}
    exec((export_dir / "model.py").read_text(), namespace)
    module = namespace["SmallCnn"]()
    module.load_state_dict(load_file(str(export_dir / "model.safetensors")))
    raw = read_digits(None).test.x.astype(np.float32)
    with torch.no_grad():
        logits = module.eval()(torch.from_numpy(raw)).numpy()
    expected = load_run(trained, checkpoint="last").logits(raw)
    assert float(np.abs(logits - expected).max()) <= TOLERANCE
    record = json.loads((export_dir / "export.json").read_text())
    assert record["torch"]["files"] == ["model.py", "model.safetensors"]
    assert record["torch"]["checkpoint"].endswith("last.safetensors")


def test_settings_and_a_failed_check_are_one_line(trained, capsys):
    with pytest.raises(ConfigError, match=r"^export\.opset: must be >= 17, got 13$"):
        export_in_process(trained, "export.opset=13")
    with pytest.raises(ConfigError, match=r"^export\.verify_samples: expected an integer >= 0"):
        export_in_process(trained, "export.verify_samples=-2")
    target = trained / "export" / "model.onnx"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"an earlier export")
    with pytest.raises(ConfigError, match=r"^export: the ONNX model's logits differ from "
                                          r"convtrain's by up to .* was not written$"):
        export_in_process(trained, "export.tolerance=0.0")
    assert target.read_bytes() == b"an earlier export"
    export_in_process(trained, "export.verify_samples=0")
    assert "not checked (export.verify_samples=0)" in capsys.readouterr().out
    assert "check" not in json.loads((trained / "export" / "export.json").read_text())["onnx"]


def test_missing_dataset_files_say_how_to_export_without_the_check(trained, monkeypatch):
    def missing(options):
        raise DataError("digits: /nowhere/digits.npz not found")

    monkeypatch.setitem(DATASETS._entries, "digits", missing)
    with pytest.raises(DataError, match=r"^digits: /nowhere/digits\.npz not found \(the export "
                                        r"is checked on the run's test images; "
                                        r"export\.verify_samples=0 exports without the check\)$"):
        export_in_process(trained)


def test_the_check_reads_the_data_eval_would(trained, cifar_root):
    """export's verification images follow eval's rule: data overrides on the command line
    apply (here another dataset, whose images do not fit the model), and model overrides are
    refused (the model comes from the checkpoint)."""
    def export_with(*overrides):
        with initialize_config_dir(config_dir(), version_base="1.3"):
            cfg = compose("train", overrides=["task=export", f"trainer.resume={trained}",
                                              *overrides], return_hydra_config=True)
        run(cfg, run_dir=trained / "export")

    with pytest.raises(ConfigError, match=r"^export: the images of dataset 'cifar10' \(data="
                                          r"cifar10 from the command line\) have shape "
                                          r"\(3, 32, 32\) but the model"):
        export_with("data=cifar10", f"data.root={cifar_root}")
    with pytest.raises(ConfigError, match=r"^model=lenet5: task=export cannot change the model: "
                                          r"the model comes from the checkpoint of "
                                          r"trainer\.resume"):
        export_with("model=lenet5")


def test_a_run_is_needed(tmp_path):
    with pytest.raises(ConfigError, match=r"^task=export works on a trained run: set "
                                          r"trainer\.resume=RUN_DIR"):
        run(compose_run("task=export"), run_dir=tmp_path)


# --- from the command line --------------------------------------------------------------------
def export_cli(run_dir: Path, *args: str) -> Path:
    """``convtrain task=export trainer.resume=RUN_DIR ARGS``: checks what it prints, returns the
    ONNX file."""
    proc = run_convtrain(run_dir.parent, "task=export", f"trainer.resume={run_dir}", *args)
    target = run_dir / "export" / "model.onnx"
    assert f"written to {target}" in proc.stdout
    _, _, figure, largest, allowed = FIGURE.search(proc.stdout).groups()
    assert float(figure) <= float(allowed)
    assert float(allowed) == pytest.approx(TOLERANCE * max(1.0, float(largest)), rel=0.05)
    return target


def assert_agrees(exported: np.ndarray, expected: np.ndarray) -> None:
    """Within 1e-5, or 1e-5 of the largest |logit| when that is above 1 (float32 rounding
    grows with the logits; convtrain/export/settings.py)."""
    largest = float(np.abs(expected).max())
    assert float(np.abs(exported - expected).max()) <= TOLERANCE * max(1.0, largest)


@pytest.mark.slow
def test_cli_small_cnn_on_digits(digits_run):
    raw = read_digits(None).test.x
    exported = onnx_logits(export_cli(digits_run), raw)
    assert float(np.abs(exported - load_run(digits_run).logits(raw)).max()) <= TOLERANCE
    bad = run_convtrain(digits_run.parent, "task=export", f"trainer.resume={digits_run}",
                        "export.format=tflite", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "export.format" in bad.stderr and "onnx, torch" in bad.stderr


@pytest.mark.slow
def test_cli_cifar_cnn_on_synthetic_cifar(cifar_run, cifar_root):
    raw = DATASETS.get("cifar10")(StorageOptions("cifar10", str(cifar_root), False, None)).test.x
    exported = onnx_logits(export_cli(cifar_run), raw)  # 0..255 RGB, as the files store them
    assert exported.shape == (100, 10)
    assert_agrees(exported, load_run(cifar_run).logits(raw))


@pytest.mark.slow  # reading the 70,000 images takes ~10 s
def test_cli_lenet5_on_fashion_mnist(fmnist_run):
    raw = DATASETS.get("fashion_mnist")(
        StorageOptions("fashion_mnist", str(FASHION_MNIST_DIR), False, None)).test.x[:500]
    exported = onnx_logits(export_cli(fmnist_run), raw)
    assert_agrees(exported, load_run(fmnist_run).logits(raw))
