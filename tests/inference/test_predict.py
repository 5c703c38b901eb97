"""Top-k rows, the terminal table, and predictions.csv / .json read back with csv and json."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.inference.predict import Prediction, format_table, top_k_predictions, \
    write_predictions

CLASSES = ["T-shirt/top", "trouser", "pullover", "dress"]


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_top_k_against_a_sort_by_hand():
    probs = softmax(np.random.default_rng(0).normal(size=(5, 4)))
    names = [f"img{i}.png" for i in range(5)]
    rows = top_k_predictions(probs, names, CLASSES, 3)
    assert len(rows) == 15
    for i, name in enumerate(names):
        mine = [r for r in rows if r.input == name]
        by_hand = sorted(range(4), key=lambda k: -probs[i, k])[:3]
        assert [r.rank for r in mine] == [1, 2, 3]
        assert [r.class_index for r in mine] == by_hand
        assert [r.class_name for r in mine] == [CLASSES[k] for k in by_hand]
        assert [r.probability for r in mine] == [float(probs[i, k]) for k in by_hand]


def test_ties_rank_the_lower_class_first_and_names_are_optional():
    rows = top_k_predictions(np.array([[0.25, 0.25, 0.25, 0.25]]), ["a"], None, 4)
    assert [r.class_index for r in rows] == [0, 1, 2, 3]
    assert {r.class_name for r in rows} == {""}


@pytest.mark.parametrize("top_k, message", [
    (5, "predict.top_k: must be at most the number of classes, 4; got 5"),
    (0, "predict.top_k: expected a positive integer, got 0"),
    (1.5, "predict.top_k: expected a positive integer, got 1.5"),
])
def test_bad_top_k_names_the_key(top_k, message):
    with pytest.raises(ConfigError) as info:
        top_k_predictions(np.full((1, 4), 0.25), ["a"], CLASSES, top_k)
    assert str(info.value) == message


def test_table_is_aligned_and_groups_each_input():
    rows = [Prediction("a.png", 1, 3, "dress", 0.9), Prediction("a.png", 2, 0, "T-shirt/top", 0.1),
            Prediction("long_name.npy[12]", 1, 1, "trouser", 0.998765)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["input", "rank", "class", "probability"]
    assert lines[1].split() == ["a.png", "1", "3", "dress", "0.9000"]
    assert lines[2].split() == ["2", "0", "T-shirt/top", "0.1000"] and lines[2].startswith(" ")
    assert lines[3].split() == ["long_name.npy[12]", "1", "1", "trouser", "0.9988"]
    header = lines[0]
    rank_end, class_start = header.index("rank") + len("rank"), header.index("class")
    for line in lines[1:]:  # ranks and probabilities right-aligned, classes left-aligned
        assert line[rank_end - 1].isdigit() and line[rank_end] == " "
        assert line[class_start].isdigit() and line[class_start - 1] == " "
        assert len(line) == len(header)


def test_csv_and_json_read_back(tmp_path):
    probs = softmax(np.random.default_rng(1).normal(size=(3, 4)))
    rows = top_k_predictions(probs, ['a "quoted", name.png', "b.png", "c.npy[0]"], CLASSES, 2)
    csv_path, json_path = write_predictions(rows, tmp_path / "predict", {"top_k": 2})
    assert (csv_path.name, json_path.name) == ("predictions.csv", "predictions.json")
    with open(csv_path, newline="") as f:
        table = list(csv.DictReader(f))
    written = json.loads(json_path.read_text())
    assert written["header"] == {"top_k": 2}
    records = written["predictions"]
    assert len(table) == len(records) == 6
    for row, from_csv, from_json in zip(rows, table, records):
        assert from_csv["input"] == from_json["input"] == row.input
        assert int(from_csv["rank"]) == from_json["rank"] == row.rank
        assert int(from_csv["class_index"]) == from_json["class_index"] == row.class_index
        assert from_csv["class_name"] == from_json["class_name"] == row.class_name
        # the shortest text, and still the same float32
        assert np.float32(from_csv["probability"]) == np.float32(row.probability)
        assert np.float32(from_json["probability"]) == np.float32(row.probability)
        assert len(from_csv["probability"]) <= len(repr(float(np.float32(row.probability))))
    assert sorted(p.name for p in (tmp_path / "predict").iterdir()) == ["predictions.csv",
                                                                       "predictions.json"]


def test_a_failed_write_names_its_file_and_leaves_no_temporary(tmp_path):
    rows = [Prediction("a.png", 1, 0, "x", 1.0)]
    write_predictions(rows, tmp_path)
    (tmp_path / "predictions.json").unlink()
    (tmp_path / "predictions.json").mkdir()  # the JSON cannot replace a directory
    with pytest.raises(OSError) as info:
        write_predictions([Prediction("b.png", 1, 0, "x", 1.0)], tmp_path)
    assert info.value.filename == str(tmp_path / "predictions.json")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert (tmp_path / "predictions.csv").read_text().startswith("input,rank,")  # whole
