"""``convtrain.inference.evaluate``: the scores of a trained model against scikit-learn's, on the
real outputs of a trained run, and the files that hold them."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import log_loss, precision_recall_fscore_support

from convtrain.data import load_dataset
from convtrain.data.load import load_raw_splits
from convtrain.errors import ConfigError
from convtrain.inference import load_run
from convtrain.inference.evaluate import RESULT_FILES, Evaluation, evaluate, write_results
from convtrain.visuals.charts import matrix_layout

K = 10


@pytest.fixture(scope="module")
def trained(digits_run):
    return load_run(digits_run, checkpoint="last")


@pytest.fixture(scope="module")
def test_split(trained):
    return load_raw_splits(trained.config["data"], seed=trained.config["seed"]).test


def sklearn_scores(y, proba):
    pred = proba.argmax(axis=1)
    labels = list(range(K))
    per_class = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    macro = precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan,
                                            average="macro")
    return {"cm": sk_confusion_matrix(y, pred, labels=labels), "per_class": per_class,
            "macro": macro[:3], "loss": log_loss(y, proba, labels=labels)}


@pytest.mark.parametrize("classes", [K, 5], ids=["all classes", "classes 0-4 only"])
def test_scores_equal_sklearns_on_real_outputs(trained, test_split, classes):
    # "classes 0-4 only": recall of 5..9 is undefined, and so is the precision of a class
    # nothing was predicted as: they must be left out of the macro averages, as sklearn does
    keep = test_split.y < classes
    x, y = test_split.x[keep], test_split.y[keep]
    ev = evaluate(trained, x, y, split="test", dataset="digits")
    ref = sklearn_scores(y, trained.predict_proba(x))

    np.testing.assert_array_equal(ev.confusion, ref["cm"])
    assert ev.accuracy == pytest.approx(np.mean(trained.predict(x) == y), abs=0)
    assert ev.loss == pytest.approx(ref["loss"], rel=1e-9)
    per_class = ev.per_class()
    for name, expected in zip(("precision", "recall", "f1", "support"), ref["per_class"]):
        np.testing.assert_allclose(per_class[name], expected, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(per_class["accuracy"], per_class["recall"])
    np.testing.assert_allclose(list(ev.macro().values()), ref["macro"], rtol=1e-12)
    if classes < K:
        assert np.isnan(per_class["recall"][classes:]).all()


def test_files_hold_the_scores(trained, test_split, tmp_path):
    x, y = test_split.x, test_split.y
    ev = evaluate(trained, x, y, split="test", dataset="digits",
                  details={"seed": 0})
    paths = write_results(ev, tmp_path / "eval")
    assert [p.name for p in paths] == list(RESULT_FILES) and all(p.is_file() for p in paths)
    ref = sklearn_scores(y, trained.predict_proba(x))

    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["dataset"] == "digits" and metrics["split"] == "test"
    assert metrics["num_images"] == len(y) == sum(r["support"] for r in metrics["per_class"])
    assert metrics["checkpoint"].endswith("last.safetensors") and metrics["epoch"] == 2
    assert metrics["seed"] == 0 and metrics["class_names"] == [str(d) for d in range(K)]
    assert metrics["loss"] == pytest.approx(ref["loss"], rel=1e-9)
    assert metrics["confusion_matrix"] == ref["cm"].tolist()
    assert metrics["macro_f1"] == pytest.approx(ref["macro"][2], rel=1e-12)

    with open(tmp_path / "eval" / "per_class.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [str(d) for d in range(K)]
    np.testing.assert_allclose([float(r["precision"] or "nan") for r in rows], ref["per_class"][0],
                               rtol=1e-15, equal_nan=True)
    np.testing.assert_allclose([float(r["recall"]) for r in rows], ref["per_class"][1], rtol=1e-15)
    assert [int(r["support"]) for r in rows] == list(ref["per_class"][3])

    with open(tmp_path / "eval" / "confusion_matrix.csv", newline="") as f:
        header, *body = list(csv.reader(f))
    assert header[1:] == [str(d) for d in range(K)] and [r[0] for r in body] == header[1:]
    np.testing.assert_array_equal(np.array([r[1:] for r in body], dtype=int), ref["cm"])


def test_undefined_scores_are_null_and_empty(trained, test_split, tmp_path):
    keep = test_split.y < 3
    ev = evaluate(trained, test_split.x[keep], test_split.y[keep])
    write_results(ev, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: no NaN
    assert metrics["per_class"][9]["recall"] is None and metrics["per_class"][9]["support"] == 0
    rows = list(csv.DictReader(open(tmp_path / "per_class.csv", newline="")))
    assert rows[9]["recall"] == "" and rows[9]["accuracy"] == ""


def share_darkness(image, cm, title=""):
    """(row share, darkness) of each cell, read at the cell's top-left pixel (away from text)."""
    layout = matrix_layout(cm.shape[0], title)
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    out = []
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            pixel = rgb[layout.top + i * layout.cell + 1, layout.left + j * layout.cell + 1]
            out.append((cm[i, j] / max(cm[i].sum(), 1), 765 - pixel.sum()))
    return out


@pytest.mark.parametrize("k", [10, 100])
def test_png_colours_follow_the_row_shares(tmp_path, k):
    rng = np.random.default_rng(k)
    labels = rng.integers(0, k, size=40 * k)
    predictions = np.where(rng.random(labels.size) < 0.6, labels, rng.integers(0, k, labels.size))
    ev = Evaluation(labels=labels, predictions=predictions, loss=1.0,
                    class_names=tuple(map(str, range(k))), dataset="synthetic", split="test")
    write_results(ev, tmp_path)
    image = Image.open(tmp_path / "confusion_matrix.png")
    image.load()
    assert image.format == "PNG"
    layout = matrix_layout(k, "title")
    assert image.width >= layout.left + k * layout.cell and layout.cell >= 4
    cells = share_darkness(image, ev.confusion, "title")
    assert all(d == 0 for s, d in cells if s == 0)  # no image: white
    ordered = [d for _, d in sorted(cells)]
    assert ordered == sorted(ordered) and ordered[-1] > 250  # darker with the share


def test_bad_inputs_are_one_line(trained, test_split):
    x, y = test_split.x, test_split.y
    with pytest.raises(ConfigError, match="no images"):
        evaluate(trained, x[:0], y[:0])
    with pytest.raises(ConfigError, match="label 10 is outside the model's 10 classes"):
        evaluate(trained, x[:2], np.array([1, 10]))
    with pytest.raises(ConfigError, match=r"3 images for 2 labels"):
        evaluate(trained, x[:3], y[:2])
    with pytest.raises(ConfigError, match=r"expected raw images of shape \(N, 1, 8, 8\)"):
        evaluate(trained, np.zeros((2, 3, 8, 8)), y[:2])


def test_raw_splits_are_load_datasets_before_preprocessing(trained):
    data_cfg = {**trained.config["data"], "subset": 900, "val_fraction": 0.2}
    raw = load_raw_splits(data_cfg, seed=7)
    prepared = load_dataset(data_cfg, seed=7)
    assert (len(raw.train), len(raw.val), len(raw.test)) == (720, 180, 360)
    preprocessing = prepared.preprocessing
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(raw.split(name).y, prepared.__getattribute__(name).y)
        np.testing.assert_array_equal(preprocessing.apply(raw.split(name).x),
                                      prepared.__getattribute__(name).x)
    assert raw.train.x.dtype == np.uint8 and raw.class_names == prepared.class_names
