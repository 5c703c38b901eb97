"""TensorBoard event files written without TensorFlow or PyTorch, read back by TensorBoard."""
from __future__ import annotations

import os

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convtrain.tb import TensorBoardWriter

ALL = {"compressedHistograms": 0, "images": 0, "audio": 0, "scalars": 0, "histograms": 0,
       "tensors": 0}


def read(logdir_or_file):
    acc = EventAccumulator(str(logdir_or_file), size_guidance=ALL)
    acc.Reload()
    return acc


def test_scalars_and_text_round_trip(tmp_path):
    values = [(1, 0.5), (2, 0.25), (3, 0.125), (10, -3.0)]
    with TensorBoardWriter(tmp_path / "tb") as tb:
        for step, v in values:
            tb.add_scalar("train/loss", v, step)
        tb.add_scalar("lr", 1e-3, 1)
        tb.add_text("config", "model:\n  name: lenet5", 0)
    acc = read(tmp_path / "tb")
    assert sorted(acc.Tags()["scalars"]) == ["lr", "train/loss"]
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == values
    assert acc.Scalars("lr")[0].value == pytest.approx(1e-3)
    assert acc.Tags()["tensors"] == ["config"]
    (text,) = acc.Tensors("config")
    assert text.step == 0
    assert text.tensor_proto.string_val[0].decode() == "model:\n  name: lenet5"
    assert acc.SummaryMetadata("config").plugin_data.plugin_name == "text"


def test_flush_makes_events_visible_before_close(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    tb.add_scalar("a", 1.0, 1)
    tb.flush()
    assert [e.value for e in read(tb.path).Scalars("a")] == [1.0]
    tb.close()
    tb.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        tb.add_scalar("a", 2.0, 2)


def test_two_writers_in_one_dir_get_distinct_files(tmp_path):
    with TensorBoardWriter(tmp_path) as a, TensorBoardWriter(tmp_path) as b:
        a.add_scalar("x", 1.0, 1)
        b.add_scalar("x", 2.0, 1)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and a.path != b.path
    for name in files:
        assert name.startswith("events.out.tfevents.")
        assert f".{os.getpid()}." in name
    assert read(a.path).Scalars("x")[0].value == 1.0
    assert read(b.path).Scalars("x")[0].value == 2.0
