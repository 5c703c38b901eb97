"""TensorBoard event files written without TensorFlow or PyTorch, read back by TensorBoard."""
from __future__ import annotations

import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata

from convtrain.errors import InternalError
from tests.visuals.pillow_png import decode_png
from convtrain.visuals.tensorboard import (HISTOGRAM_BUCKETS, Metric, TensorBoardWriter,
                                          histogram_proto)

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
    # a scalar string: TensorBoard renders it as Markdown (shape (1,) would be a 1-cell table)
    assert len(text.tensor_proto.tensor_shape.dim) == 0
    assert acc.SummaryMetadata("config").plugin_data.plugin_name == "text"


def test_child_runs_are_subdirectories_flushed_and_closed_with_the_parent(tmp_path):
    tb = TensorBoardWriter(tmp_path / "run")
    tb.add_scalar("performance/images_per_s", 10.0, 1)
    for split, value in (("train", 0.5), ("val", 0.75)):
        tb.child(split).add_scalar("epoch/loss", value, 1)
    assert tb.child("val") is tb.child("val")
    tb.flush()  # readable while the run goes on
    assert read(tmp_path / "run" / "val").Scalars("epoch/loss")[0].value == 0.75
    tb.close()
    assert read(tmp_path / "run").Tags()["scalars"] == ["performance/images_per_s"]
    assert read(tmp_path / "run" / "train").Scalars("epoch/loss")[0].value == 0.5
    with pytest.raises(InternalError, match="closed"):
        tb.child("val").add_scalar("epoch/loss", 1.0, 2)
    with pytest.raises(InternalError, match="closed"):
        tb.child("test")


# around the byte loop's limit (64), one lane (256) and several, the 4 inverted start bytes
@pytest.mark.parametrize("size", [0, 1, 3, 9, 63, 64, 65, 67, 255, 256, 257, 1023, 50_001])
def test_record_checksums_equal_tensorboards_own(size):
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    from convtrain.visuals.tensorboard import crc32c, masked_crc32c

    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == pywrap_tensorflow.crc32c(data)
    assert masked_crc32c(data) == pywrap_tensorflow.masked_crc32c(data)
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


def test_event_records_are_framed_as_tensorboards_record_writer_frames_them():
    import io

    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from convtrain.visuals.tensorboard import event_record

    event = event_pb2.Event(wall_time=1.5, step=3, file_version="x" * 300)
    sink = io.BytesIO()
    RecordWriter(sink).write(event.SerializeToString())  # its own pure-Python CRC
    assert event_record(event) == sink.getvalue()


def test_an_epochs_scalars_and_histograms_share_one_record_and_read_back_as_separate_curves(
        tmp_path):
    w = np.random.default_rng(3).normal(size=(8, 9))
    with TensorBoardWriter(tmp_path) as tb:
        for step in (1, 2):
            tb.add_scalars({"optimizer/lr": 0.5 / step, "performance/epoch_time_s": 2.0 * step},
                           step)
            pairs = {"h/a": w * step, "h/b": np.full(3, np.nan), "h/c": -w}
            # a mapping, or pairs from an iterator (one array at a time): the same record
            tb.add_histograms(pairs if step == 1 else iter(pairs.items()), step)
        tb.add_scalars({}, 3)  # nothing: no record
        tb.add_histograms({"h/b": np.full(2, np.inf)}, 3)  # nothing finite: no record
    acc = read(tmp_path)
    assert [(e.step, e.value) for e in acc.Scalars("optimizer/lr")] == [(1, 0.5), (2, 0.25)]
    assert [(e.step, e.value) for e in acc.Scalars("performance/epoch_time_s")] == [(1, 2.0),
                                                                                    (2, 4.0)]
    assert sorted(acc.Tags()["histograms"]) == ["h/a", "h/c"]
    assert [e.histogram_value.max for e in acc.Histograms("h/a")] == [w.max(), 2 * w.max()]
    assert acc.Histograms("h/c")[0].histogram_value.min == -w.max()
    # the file version, then one record per call that had something to write
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    assert len(list(EventFileLoader(str(tb.path)).Load())) == 1 + 4


def test_flush_makes_events_visible_before_close(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    tb.add_scalar("a", 1.0, 1)
    tb.flush()
    assert [e.value for e in read(tb.path).Scalars("a")] == [1.0]
    tb.close()
    tb.close()  # idempotent
    with pytest.raises(InternalError, match="closed"):
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


def test_images_round_trip_as_png(tmp_path):
    grey = np.arange(35, dtype=np.uint8).reshape(5, 7)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    with TensorBoardWriter(tmp_path) as tb:
        tb.add_image("kernels/conv1", grey, 0)
        tb.add_image("kernels/conv1", grey[::-1].copy(), 3)
        tb.add_image("rgb", rgb, 1)
    acc = read(tmp_path)
    assert sorted(acc.Tags()["images"]) == ["kernels/conv1", "rgb"]
    events = acc.Images("kernels/conv1")
    assert [e.step for e in events] == [0, 3]
    assert (events[0].height, events[0].width) == (5, 7)
    np.testing.assert_array_equal(decode_png(events[0].encoded_image_string), grey)
    np.testing.assert_array_equal(decode_png(events[1].encoded_image_string), grey[::-1])
    (image,) = acc.Images("rgb")
    assert (image.height, image.width) == (4, 6)
    np.testing.assert_array_equal(decode_png(image.encoded_image_string), rgb)
    with TensorBoardWriter(tmp_path / "bad") as tb, pytest.raises(InternalError, match="uint8"):
        tb.add_image("x", np.zeros((2, 2)), 0)


def test_histogram_proto_buckets_are_equal_width_between_min_and_max():
    values = np.random.default_rng(1).normal(size=(40, 25)).astype(np.float32)
    h = histogram_proto(values, buckets=30)
    v = values.astype(np.float64).ravel()
    assert (h.min, h.max, h.num) == (v.min(), v.max(), 1000)
    assert h.sum == pytest.approx(v.sum()) and h.sum_squares == pytest.approx((v * v).sum())
    width = (v.max() - v.min()) / 30
    np.testing.assert_allclose(h.bucket_limit, v.min() + width * np.arange(1, 31))
    assert h.bucket_limit[-1] == v.max()
    # independent count: values whose bin index floor((v - min) / width) is i (max -> last)
    index = np.minimum(np.floor((v - v.min()) / width), 29)
    assert list(h.bucket) == [float(np.sum(index == i)) for i in range(30)]
    # and numpy's own equal-width histogram agrees (no value sits exactly on an edge here)
    assert list(h.bucket) == np.histogram(v, bins=30)[0].tolist()
    assert sum(h.bucket) == 1000


def test_histogram_proto_edge_cases():
    h = histogram_proto(np.full(7, 0.25), buckets=30)  # constant: one bucket holds everything
    assert (list(h.bucket_limit), list(h.bucket), h.min, h.max) == ([0.25], [7.0], 0.25, 0.25)
    h = histogram_proto(np.array([1.0, np.nan, 3.0, np.inf]), buckets=2)
    assert (h.num, list(h.bucket), h.min, h.max) == (2, [1.0, 1.0], 1.0, 3.0)
    assert histogram_proto(np.array([np.nan])) is None
    with pytest.raises(InternalError, match="bucket"):
        histogram_proto(np.ones(3), buckets=0)


def test_histograms_round_trip(tmp_path):
    w = np.random.default_rng(2).normal(size=(16, 1, 3, 3))
    with TensorBoardWriter(tmp_path) as tb:
        tb.add_histogram("conv1/weight", w, 0)
        tb.add_histogram("conv1/weight", 2 * w, 1)
        tb.add_histogram("conv1/weight_grad", np.full(4, np.nan), 1)  # nothing finite: skipped
    acc = read(tmp_path)
    assert acc.Tags()["histograms"] == ["conv1/weight"]
    events = acc.Histograms("conv1/weight")
    assert [e.step for e in events] == [0, 1]
    for e, scale in zip(events, (1, 2)):
        h = e.histogram_value
        assert h.num == 144 and sum(h.bucket) == 144 and len(h.bucket) == HISTOGRAM_BUCKETS
        assert (h.min, h.max) == (scale * w.min(), scale * w.max())


def test_hparams_session_read_by_the_hparams_plugin_metadata(tmp_path):
    hparams = {"optimizer.lr": 0.05, "model.layers.conv1.filters": 16, "seed": 3,
               "optimizer.name": "sgd", "optimizer.nesterov": False}
    with TensorBoardWriter(tmp_path) as tb:
        tb.add_session_start(hparams, start_time=100.0)
        tb.add_scalar("val/accuracy", 0.9, 1)
        tb.add_session_end("success", end_time=200.0)
    acc = read(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert set(content) == {hparams_metadata.SESSION_START_INFO_TAG,
                            hparams_metadata.SESSION_END_INFO_TAG}
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG])
    assert start.start_time_secs == 100.0
    # integers as their text: TensorBoard would print the number 16 as "16.000"
    assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
        "optimizer.lr": "number_value", "model.layers.conv1.filters": "string_value",
        "seed": "string_value", "optimizer.name": "string_value",
        "optimizer.nesterov": "bool_value"}
    assert start.hparams["optimizer.lr"].number_value == 0.05
    assert start.hparams["model.layers.conv1.filters"].string_value == "16"
    assert start.hparams["optimizer.name"].string_value == "sgd"
    assert start.hparams["optimizer.nesterov"].bool_value is False
    end = hparams_metadata.parse_session_end_info_plugin_data(
        content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS and end.end_time_secs == 200.0


def test_experiment_record_declares_columns_types_and_metric_order(tmp_path):
    with TensorBoardWriter(tmp_path) as tb:
        tb.add_experiment({"optimizer.lr": 0.1, "seed": 1, "optimizer.nesterov": True,
                           "model.name": "lenet5"},
                          [Metric("", "monitor/best_val_accuracy", "best_val_accuracy"),
                           Metric("val", "epoch/accuracy", "val_accuracy")],
                          differing={"seed"})
    content = read(tmp_path).PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG])
    infos = {h.name: (h.type, h.differs) for h in experiment.hparam_infos}
    assert infos == {"optimizer.lr": (api_pb2.DATA_TYPE_FLOAT64, False),
                     "seed": (api_pb2.DATA_TYPE_STRING, True),
                     "optimizer.nesterov": (api_pb2.DATA_TYPE_BOOL, False),
                     "model.name": (api_pb2.DATA_TYPE_STRING, False)}
    assert [(m.name.group, m.name.tag, m.display_name) for m in experiment.metric_infos] == [
        ("", "monitor/best_val_accuracy", "best_val_accuracy"),
        ("val", "epoch/accuracy", "val_accuracy")]


def test_hparams_reject_unrepresentable_values(tmp_path):
    with TensorBoardWriter(tmp_path) as tb:
        with pytest.raises(InternalError, match="hparam 'model.layers'"):
            tb.add_session_start({"model.layers": [1, 2]})
        with pytest.raises(InternalError, match="status"):
            tb.add_session_end("crashed")


def test_disabled_writer_writes_nothing(tmp_path):
    with TensorBoardWriter(tmp_path / "tb", enabled=False) as tb:
        tb.add_scalar("a", 1.0, 1)
        tb.add_image("i", np.zeros((2, 2), np.uint8), 0)
        tb.add_histogram("h", np.ones(3), 0)
        tb.add_session_start({"a": 1})
        tb.add_session_end()
        tb.flush()
    assert tb.path is None and not (tmp_path / "tb").exists()


def test_records_reach_the_file_at_flush_or_when_the_last_write_is_old(tmp_path, monkeypatch):
    from convtrain.visuals import tensorboard

    tb = TensorBoardWriter(tmp_path)
    tb.add_scalar("a", 1.0, 1)
    assert read(tb.path).Tags()["scalars"] == []  # kept in memory until the flush
    tb.flush()
    assert [e.value for e in read(tb.path).Scalars("a")] == [1.0]
    # a long epoch: the first record FLUSH_SECS after the last write takes the others along
    now = tensorboard.time.monotonic()
    monkeypatch.setattr(tensorboard.time, "monotonic", lambda: now + tensorboard.FLUSH_SECS)
    tb.add_scalar("a", 2.0, 2)
    assert [e.value for e in read(tb.path).Scalars("a")] == [1.0, 2.0]
    tb.close()


class FullDisk:
    """An event file on a full disk: each write fails as ``write()`` does (no file name)."""

    def __init__(self):
        self.writes = 0

    def write(self, data):
        self.writes += 1
        raise OSError(28, "No space left on device")

    def flush(self):
        pass

    def close(self):
        pass


def test_a_disk_error_names_the_event_file_once_and_nothing_is_written_after_it(tmp_path):
    tb = TensorBoardWriter(tmp_path)
    child = tb.child("val")
    child.add_scalar("epoch/loss", 0.5, 1)
    full = child._file = FullDisk()
    with pytest.raises(OSError) as raised:
        tb.flush()
    assert (raised.value.errno, raised.value.filename) == (28, str(child.path))
    with pytest.raises(OSError) as again:  # the file may end in a partial record
        child.flush()
    assert again.value is raised.value and full.writes == 1
    tb.add_scalar("a", 1.0, 1)
    tb.close()  # the run reports the error already; the other files are complete
    assert full.writes == 1
    assert [e.value for e in read(tb.path).Scalars("a")] == [1.0]
