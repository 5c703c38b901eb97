"""``task=predict`` end to end: a small_cnn trained on digits predicts on PNG files and a .npy
written here; the reference is the trained model itself, run in-process through load_run on
the same pixels (PNG bytes / 255 * 16, the documented scale; the .npy as stored)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.data.digits import read_digits
from convtrain.errors import ConfigError, DataError
from convtrain.inference import load_run
from tests.app.test_cli import convtrain

QUIET = ["logger.tensorboard=false", "logger.png=false", "trainer.progress=false"]


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """small_cnn on digits, one epoch, in-process."""
    run_dir = tmp_path_factory.mktemp("run")
    run(compose_config("trainer.max_epochs=1", *QUIET), run_dir=run_dir)
    return run_dir


def write_digit_pngs(folder: Path, count: int) -> np.ndarray:
    """The first test digits as 8-bit PNGs: 0..16 -> 0..255 (v * 255 // 16). Returns the bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = (read_digits(None).test.x[:count, 0].astype(np.int64) * 255 // 16).astype(np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"digit{i:02d}.png")
    return pixels


def expected_rows(run_dir: Path, raw: np.ndarray, names: list[str], top_k: int) -> list[tuple]:
    """(input, rank, class_index, class_name, probability) by sorting load_run's output."""
    loaded = load_run(run_dir)
    proba = loaded.predict_proba(raw)
    rows = []
    for name, p in zip(names, proba):
        for rank, k in enumerate(sorted(range(p.size), key=lambda c: (-p[c], c))[:top_k]):
            rows.append((name, rank + 1, k, loaded.class_names[k], p[k]))
    return rows


def check_written(folder: Path, expected: list[tuple]) -> None:
    with open(folder / "predictions.csv", newline="") as f:
        table = list(csv.DictReader(f))
    records = json.loads((folder / "predictions.json").read_text())["predictions"]
    assert len(table) == len(records) == len(expected)
    for row, from_json, (name, rank, index, class_name, probability) in zip(table, records,
                                                                             expected):
        assert (row["input"], int(row["rank"]), int(row["class_index"]), row["class_name"]) \
            == (name, rank, index, class_name)
        assert (from_json["input"], from_json["rank"], from_json["class_index"]) \
            == (name, rank, index)
        assert float(row["probability"]) == pytest.approx(probability, rel=1e-6, abs=1e-9)
        assert from_json["probability"] == pytest.approx(probability, rel=1e-6, abs=1e-9)


def test_predict_on_pngs_and_an_array_equals_the_model_in_process(trained, tmp_path, capsys):
    pngs = write_digit_pngs(tmp_path / "imgs", 12)
    raw = read_digits(None).test.x[12:15]  # as the dataset stores them
    np.save(tmp_path / "raw.npy", raw)
    out = trained / "predict"
    cfg = compose_config("task=predict", f"trainer.resume={trained}", "predict.top_k=3",
                         f"predict.inputs=[{tmp_path}/imgs/*.png,{tmp_path}/raw.npy]")
    run(cfg, run_dir=out)
    names = [f"digit{i:02d}.png" for i in range(12)] + [f"raw.npy[{i}]" for i in range(3)]
    from_pngs = (pngs.astype(np.float64) / 255 * 16)[:, None]  # the documented image scale
    inputs = np.concatenate([from_pngs, raw.astype(np.float64)])
    expected = expected_rows(trained, inputs, names, 3)
    check_written(out, expected)
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["input", "rank", "class", "probability"]
    assert all(name in table for name in names) and str(out / "predictions.csv") in table
    # the PNGs are the digits up to 8-bit rounding: the classes of the raw digits come back
    raw_classes = load_run(trained).predict(read_digits(None).test.x[:12])
    png_classes = [index for name, rank, index, *_ in expected if rank == 1][:12]
    assert np.mean(raw_classes == np.array(png_classes)) >= 0.9


def test_top_k_defaults_to_three_and_is_checked_against_the_classes(trained, tmp_path):
    write_digit_pngs(tmp_path / "imgs", 2)
    resume = f"trainer.resume={trained}"
    run(compose_config("task=predict", resume, f"predict.inputs={tmp_path}/imgs"),
        run_dir=tmp_path / "out")
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(written["predictions"]) == 2 * 3
    # what was run: the checkpoint relative to the run directory, its epoch, the settings
    assert written["header"] == {"checkpoint": "checkpoints/best.safetensors",
                                 "epoch": load_run(trained).epoch,
                                 "inputs": f"{tmp_path}/imgs", "top_k": 3, "resize": False}
    with pytest.raises(ConfigError, match=r"^predict.top_k: must be at most the number of "
                                          r"classes, 10; got 11$"):
        run(compose_config("task=predict", resume, f"predict.inputs={tmp_path}/imgs",
                           "predict.top_k=11"), run_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"^predict.inputs: name the files .* it is not set$"):
        run(compose_config("task=predict", resume), run_dir=tmp_path / "out")


def test_another_size_is_refused_with_the_hint_then_resized(trained, tmp_path):
    Image.fromarray(np.zeros((16, 12), np.uint8)).save(tmp_path / "big.png")
    overrides = ["task=predict", f"trainer.resume={trained}", f"predict.inputs={tmp_path}/big.png"]
    with pytest.raises(DataError) as info:
        run(compose_config(*overrides), run_dir=tmp_path / "out")
    assert str(info.value) == (f"{tmp_path / 'big.png'}: image of shape (1, 16, 12) (C, H, W), "
                               "the model expects (1, 8, 8); add predict.resize=true to resize "
                               "with Pillow's bilinear filter")
    run(compose_config(*overrides, "predict.resize=true"), run_dir=tmp_path / "out")
    assert (tmp_path / "out" / "predictions.csv").is_file()


@pytest.mark.slow
def test_command_line_end_to_end(tmp_path):
    """Train and predict through `python -m convtrain`: RUN_DIR/predict/, the table, exit 2 and
    one line for a bad input."""
    convtrain(tmp_path, "trainer.max_epochs=1", "hydra.run.dir=trained", *QUIET)
    pngs = write_digit_pngs(tmp_path / "imgs", 5)
    proc = convtrain(tmp_path, "task=predict", "trainer.resume=trained",
                     "predict.inputs=imgs/*.png", "predict.top_k=2")
    names = [f"digit{i:02d}.png" for i in range(5)]
    expected = expected_rows(tmp_path / "trained", (pngs / 255 * 16)[:, None], names, 2)
    check_written(tmp_path / "trained" / "predict", expected)
    lines = proc.stdout.splitlines()
    assert "predicting 5 input(s) with trained/checkpoints/best.safetensors" in lines[0]  # log
    assert lines[1].split() == ["input", "rank", "class", "probability"]
    assert lines[2].split()[:3] == ["digit00.png", "1", str(expected[0][2])]
    assert (tmp_path / "trained" / "predict" / ".hydra" / "config.yaml").is_file()
    (tmp_path / "imgs" / "notes.png").write_text("not an image")
    proc = convtrain(tmp_path, "task=predict", "trainer.resume=trained",
                     "predict.inputs=imgs/notes.png", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "convtrain: error: imgs/notes.png: not a PNG or JPEG image (Pillow cannot identify it)"]


def test_the_run_dir_of_a_task_on_a_trained_run(tmp_path):
    # ${task} resolves to the schema's Task member, not its name
    from convtrain.app.schema import Task
    from convtrain.app.tasks import task_run_dir

    run = tmp_path / "runs" / "a"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.safetensors").write_bytes(b"")
    for resume in (run, run / "checkpoints", run / "checkpoints" / "best.safetensors"):
        assert task_run_dir(Task.predict, str(resume), "outputs/x") == str(run / "predict")
    assert task_run_dir(Task.train, str(run), "outputs/x") == "outputs/x"
    # a mistyped run directory is not created: the task goes to the default and says why
    assert task_run_dir(Task.predict, str(tmp_path / "typo"), "outputs/x") == "outputs/x"
