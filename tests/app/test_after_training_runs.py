"""Issue #12's "not done until", on the session's three trained runs (tests/inference/conftest.py:
small_cnn on digits, cifar_cnn on synthetic CIFAR-10, lenet5 on Fashion-MNIST), all through the
command line:

* ``task=predict`` on PNG files holding every test image gives the same confusion matrix and
  accuracy as ``task=eval`` on the run's test split;
* the ONNX file of ``task=export`` run in onnxruntime on every test image agrees with convtrain's
  logits within 1e-5 (absolute).

The PNGs: CIFAR-10 and Fashion-MNIST store 8-bit pixels, written as they are (RGB / grey), so a
PNG holds exactly the stored image. digits stores 0..16, and the predict rule for images is
"fraction of the file's full scale times pixel_max" (README, "Predict on your own files"): no
8-bit value maps to 1..15 exactly (v * 255 / 16 is not an integer), so the digits are written as
16-bit PNGs, ``round(v * 65535 / 16)``, which read back within 16 / 65535 / 2 = 1.2e-4 of the
stored value (checked below) -- far below anything that moves a prediction, and the test asserts
equal predictions on all 360 images.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convtrain.data.load import load_raw_splits
from convtrain.inference import load_run
from convtrain.inference.inputs import read_inputs
from tests.inference import conftest as trained_runs
from tests.inference.conftest import run_convtrain

digits_run, cifar_root = trained_runs.digits_run, trained_runs.cifar_root
cifar_run, fmnist_run = trained_runs.cifar_run, trained_runs.fmnist_run


def raw_test_split(run_dir: Path):
    """The run's test split as ``task=eval`` reads it: raw pixels and labels."""
    trained = load_run(run_dir)
    return load_raw_splits(trained.config["data"], seed=int(trained.config.get("seed", 0))).test


def write_pngs(images: np.ndarray, folder: Path, pixel_max: float) -> None:
    """``img00000.png`` ... (name order = index order): 8-bit grey / RGB as stored for 0..255
    data, 16-bit grey for digits' 0..16 (see the module docstring)."""
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        if pixel_max == 255:
            pixels = image.astype(np.uint8)
            picture = Image.fromarray(pixels[0] if len(pixels) == 1 else np.moveaxis(pixels, 0, -1))
        else:
            picture = Image.fromarray(np.rint(image[0].astype(np.float64) * 65535 / pixel_max).astype(np.uint16))
        picture.save(folder / f"img{i:05d}.png")


def confusion(true: np.ndarray, predicted: np.ndarray, classes: int) -> list[list[int]]:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix.tolist()


def check_predict_equals_eval(run_dir: Path, tmp_path: Path) -> None:
    test = raw_test_split(run_dir)
    trained = load_run(run_dir)
    pixel_max = trained.preprocessing.pixel_max
    write_pngs(test.x, tmp_path / "imgs", pixel_max)
    # the PNGs hold the stored pixels (exactly for 8-bit data, within 1.2e-4 for digits)
    read = read_inputs(str(tmp_path / "imgs"), input_shape=trained.input_shape,
                       pixel_max=pixel_max).pixels
    assert np.abs(read - test.x).max() <= (1e-4 if pixel_max == 255 else 16 / 65535 / 2 + 1e-6)

    run_convtrain(tmp_path, "task=predict", f"trainer.resume={run_dir}",
                  f"predict.inputs={tmp_path / 'imgs'}", "predict.top_k=1")
    rows = json.loads((run_dir / "predict" / "predictions.json").read_text())["predictions"]
    assert [row["input"] for row in rows] == [f"img{i:05d}.png" for i in range(len(test.x))]
    predicted = np.array([row["class_index"] for row in rows])

    run_convtrain(tmp_path, "task=eval", f"trainer.resume={run_dir}")
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == len(test.x) and metrics["split"] == "test"
    classes = len(trained.class_names)
    assert confusion(test.y, predicted, classes) == metrics["confusion_matrix"]
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predicted == test.y)), abs=1e-12)


def check_onnx_agrees(run_dir: Path) -> float:
    """Export through the CLI, run every test image in onnxruntime: the max abs logit
    difference against convtrain's own forward pass (returned)."""
    import onnxruntime

    run_convtrain(run_dir.parent, "task=export", f"trainer.resume={run_dir}")
    raw = raw_test_split(run_dir).x.astype(np.float32)
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    exported = session.run(None, {session.get_inputs()[0].name: raw})[0]
    difference = float(np.abs(exported - load_run(run_dir).logits(raw)).max())
    largest = float(np.abs(exported).max())
    print(f"\n{run_dir.parent.name}: onnxruntime vs convtrain on {len(raw)} test images: max abs "
          f"logit difference {difference:.2e} (largest |logit| {largest:.3g})")  # pytest -s
    assert difference <= 1e-5, difference
    return difference


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_digits_predict_on_pngs_equals_eval(digits_run, tmp_path):
    check_predict_equals_eval(digits_run, tmp_path)


@pytest.mark.slow
def test_digits_onnx_agrees_within_1e5(digits_run):
    check_onnx_agrees(digits_run)


@pytest.mark.slow
def test_cifar_predict_on_pngs_equals_eval_and_onnx_agrees(cifar_run, tmp_path):
    check_predict_equals_eval(cifar_run, tmp_path)
    check_onnx_agrees(cifar_run)


@pytest.mark.slow  # 10,000 PNGs written and read, 70,000 images loaded twice
def test_fmnist_predict_on_pngs_equals_eval_and_onnx_agrees(fmnist_run, tmp_path):
    check_predict_equals_eval(fmnist_run, tmp_path)
    check_onnx_agrees(fmnist_run)
