"""Per-epoch pictures, histograms and the HParams session of real (tiny) Trainer runs, read back
with TensorBoard's own readers: EventAccumulator and the HParams plugin's request handlers."""
from __future__ import annotations

import enum
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.signal import correlate2d
from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, \
    list_session_groups
from tensorboard.plugins.hparams import metadata as hparams_metadata

from convtrain.runtime.backend import get_backend
from convtrain.data.splits import ArraySplit
from convtrain.errors import ConfigError
from convtrain.nn.model import build_model
from convtrain.optim import build_optimizer, build_schedule
from tests.visuals.pillow_png import decode_png
from convtrain.training.checkpoint import load_checkpoint
from convtrain.visuals.hooks.hparams import flatten_config
from convtrain.visuals.settings import parse_logger_settings
from convtrain.training.trainer import Trainer, TrainingDiverged
from convtrain.visuals.run_logger import VisualLogger
from tests.visuals.test_kernel_grid import auto_layout, diverging

ALL = {k: 0 for k in ("scalars", "tensors", "images", "histograms", "audio",
                      "compressedHistograms")}
PAD = 1  # viz.py's default padding


# --- expected geometry, from the formulas documented in convtrain/viz.py ------------------
def grid_size(rows, cols, h, w, scale, pad=PAD):
    return rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad


def map_scale(h):  # feature-map tiles of about 64 px
    return max(1, round(64 / h))


def sample_scale(h):  # feature maps of the fixed samples: tiles of about 32 px
    return max(1, round(32 / h))


def near_square(n):
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


# --- tiny data and models ---------------------------------------------------------------
def blobs(seed=0, shape=(1, 6, 6), n=(48, 12, 12), k=3):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, int(np.prod(shape))))

    def split(count):
        y = rng.integers(0, k, count)
        x = centers[y] + 0.3 * rng.standard_normal((count, centers.shape[1]))
        return ArraySplit(x.reshape(count, *shape).astype(np.float32), y.astype(np.int64))

    return SimpleNamespace(train=split(n[0]), val=split(n[1]), test=split(n[2]), num_classes=k,
                           input_shape=shape, name="blobs")


def two_conv_model(data, f1=4, f2=3, seed=0):
    """conv1 (f1, 3x3, same) -> relu -> conv2 (f2, 3x3, valid) -> relu -> flatten -> fc."""
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": f1, "kernel_size": 3, "padding": 1},
                      "relu1": {"type": "relu"},
                      "conv2": {"type": "conv2d", "filters": f2, "kernel_size": 3},
                      "relu2": {"type": "relu"}, "flat": {"type": "flatten"},
                      "fc": {"type": "dense", "units": data.num_classes}}}
    return build_model(cfg, data.input_shape, seed=seed)


def train(run_dir, data, model=None, *, max_epochs=3, lr=0.05, **kw):
    model = model if model is not None else two_conv_model(data)
    optimizer = build_optimizer({"name": "sgd", "lr": lr, "momentum": 0.9}, model)
    schedule = build_schedule({"name": "constant"}, optimizer.lr, max_epochs)
    visuals = VisualLogger(kw.pop("logger", None), config_text=kw.get("config_text"),
                           hparams=kw.pop("hparams", None), **kw.pop("visuals", {}))
    trainer = Trainer(model, optimizer, schedule, data, run_dir=run_dir,
                      backend=get_backend("numpy"), seed=0, max_epochs=max_epochs,
                      batch_size=16, progress=False, hooks=[visuals], **kw)
    return trainer, trainer.fit()


def read_tb(run_dir, split="", name="run"):
    """The events of ``<run_dir>/tensorboard/<name>`` or of its ``split`` child run."""
    acc = EventAccumulator(str(Path(run_dir) / "tensorboard" / name / split), size_guidance=ALL)
    acc.Reload()
    return acc


def per_tile(x):
    """Min-max to 0..255 (viz.py's per_filter scaling), computed here independently."""
    x = np.asarray(x, np.float64)
    return np.round((x - x.min()) / (x.max() - x.min()) * 255).astype(np.uint8)


# --- pictures, histograms, PNG files ------------------------------------------------------
def test_kernels_feature_maps_histograms_and_pngs(tmp_path):
    data = blobs()
    model = two_conv_model(data)
    initial = {name: np.array(v) for name, v in model.state_dict().items()}
    logger = {"kernels_every_n_epochs": 2, "feature_maps_every_n_epochs": 1,
              "histograms_every_n_epochs": 2, "kernel_change_every_n_epochs": 0,
              "kernel_change_grid": "off", "kernel_top_channels": 4,
              "classification_every_n_epochs": 0, "responses": False}
    train(tmp_path, data, model, max_epochs=3, logger=logger)
    acc = read_tb(tmp_path)

    assert set(acc.Tags()["images"]) == {"kernels/conv1", "kernels/conv2", "feature_maps/conv1",
                                         "feature_maps/conv2", "feature_maps/input"}
    # every 2 epochs of 3 -> step 2, the final epoch 3, and the initial weights at step 0
    for tag in ("kernels/conv1", "kernels/conv2"):
        assert [e.step for e in acc.Images(tag)] == [0, 2, 3]
    for tag in ("feature_maps/conv1", "feature_maps/conv2"):
        assert [e.step for e in acc.Images(tag)] == [0, 1, 2, 3]
    assert [e.step for e in acc.Images("feature_maps/input")] == [0]

    classes = len(np.unique(data.test.y))
    conv1, conv2 = auto_layout(4, 1, 3, 3), auto_layout(3, 4, 3, 3)
    expected = {
        # conv1: 4 one-channel 3x3 filters -> one cell each; conv2: 3 cells of 4 channels
        # (colour images: test_kernel_grid.py checks the layout itself)
        "kernels/conv1": (conv1["height"], conv1["width"], 3),
        "kernels/conv2": (conv2["height"], conv2["width"], 3),
        # the fixed samples: first test image of each class present = rows; conv1 output
        # (4, 6, 6) ("same" padding), conv2 output (3, 4, 4): one column per channel
        "feature_maps/conv1": grid_size(classes, 4, 6, 6, sample_scale(6)),
        "feature_maps/conv2": grid_size(classes, 3, 4, 4, sample_scale(4)),
        "feature_maps/input": grid_size(1, classes, 6, 6, map_scale(6)),
    }
    for tag, shape in expected.items():
        for event in acc.Images(tag):
            assert (event.height, event.width) == shape[:2], tag
            assert decode_png(event.encoded_image_string).shape == shape, tag

    # PNG copies: same pictures as in TensorBoard, named <layer>_epoch<NNN>.png
    images = tmp_path / "images"
    names = sorted(str(p.relative_to(images)) for p in images.rglob("*.png"))
    assert names == sorted(
        [f"kernels/conv{i}_epoch{s:03d}.png" for i in (1, 2) for s in (0, 2, 3)]
        + [f"feature_maps/conv{i}_epoch{s:03d}.png" for i in (1, 2) for s in (0, 1, 2, 3)]
        + ["feature_maps/input.png"])
    for tag in ("kernels/conv1", "kernels/conv2", "feature_maps/conv1", "feature_maps/conv2"):
        kind, layer = tag.split("/")
        for event in acc.Images(tag):
            png = (images / kind / f"{layer}_epoch{event.step:03d}.png").read_bytes()
            assert png == event.encoded_image_string  # encoded once for both
            np.testing.assert_array_equal(decode_png(png), decode_png(event.encoded_image_string))

    final = load_checkpoint(tmp_path / "checkpoints" / "last").model_state
    # kernel tiles show the weights: initial ones at step 0, trained ones at the end, under
    # the default fixed limit (max |w| of the initial weights)
    limit = np.abs(initial["conv2.weight"]).max()
    s, t, g = conv2["scale"], 3 * conv2["scale"], conv2["gap"]
    for step, weights in ((0, initial), (3, final)):
        img = decode_png([e for e in acc.Images("kernels/conv2") if e.step == step][0]
                         .encoded_image_string)
        for f, c in ((0, 0), (2, 3)):  # cell = filter, its tiles = its input channels
            y = g + f // conv2["cols"] * (conv2["cell_h"] + g) + 12
            x = g + f % conv2["cols"] * (conv2["cell_w"] + g) + c * (t + 2)
            tile = img[y:y + t, x:x + t][::s, ::s].astype(int)
            expected_tile = diverging(weights["conv2.weight"][f, c] / limit)
            assert np.abs(tile - expected_tile).max() <= 1  # float32 vs float64 rounding

    # feature maps of conv1 = its output (pre-activation) on the first test image of each
    # class (row = class), each channel (column) scaled over the samples together
    first = [int(np.flatnonzero(data.test.y == k)[0]) for k in np.unique(data.test.y)]
    out = np.array([[correlate2d(np.pad(data.test.x[i, 0].astype(np.float64), 1),
                                 final["conv1.weight"][f, 0], mode="valid")
                     + final["conv1.bias"][f] for f in range(4)] for i in first])
    img = decode_png(acc.Images("feature_maps/conv1")[-1].encoded_image_string)
    s = sample_scale(6)
    for f in range(4):
        scaled = per_tile(out[:, f])  # min-max over the samples of channel f
        for row in range(len(first)):
            y, x = PAD + row * (6 * s + PAD), PAD + f * (6 * s + PAD)
            tile = img[y:y + 6 * s, x:x + 6 * s][::s, ::s].astype(int)
            assert np.abs(tile - scaled[row]).max() <= 1  # float32 vs float64 rounding

    # histograms: weights at steps 0, 2, 3; gradients (last batch of the epoch) at 2, 3
    params = [f"histograms/{p}" for p in ("conv1/weight", "conv1/bias", "conv2/weight",
                                          "conv2/bias", "fc/weight", "fc/bias")]
    assert set(acc.Tags()["histograms"]) == set(params) | {p + "_grad" for p in params}
    for p in params:
        assert [e.step for e in acc.Histograms(p)] == [0, 2, 3]
        assert [e.step for e in acc.Histograms(p + "_grad")] == [2, 3]
        key = p.removeprefix("histograms/").replace("/", ".")
        for event, weights in ((acc.Histograms(p)[0], initial), (acc.Histograms(p)[-1], final)):
            h, w = event.histogram_value, weights[key]
            assert h.num == w.size and sum(h.bucket) == w.size
            assert (h.min, h.max) == (float(w.min()), float(w.max()))
            # biases start at zero: one bucket; everything else has 30
            assert len(h.bucket) == (1 if w.min() == w.max() else 30)

    # the scalars are still there, one point per epoch
    for tag in ("optimizer/lr", "performance/epoch_time_s", "performance/images_per_s",
                "monitor/best_val_accuracy"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3]
    for split in ("train", "val", "test"):
        for tag in ("epoch/loss", "epoch/accuracy"):
            assert [e.step for e in read_tb(tmp_path, split).Scalars(tag)] == [1, 2, 3]


def test_first_layer_on_rgb_images_is_drawn_in_colour_later_layers_grey(tmp_path):
    data = blobs(shape=(3, 5, 5))
    # conv2 also reads 3 channels, but they are conv1's filters, not colours
    train(tmp_path, data, two_conv_model(data, f1=3, f2=5), max_epochs=1,
          logger={"feature_maps_every_n_epochs": 0, "histograms_every_n_epochs": 0,
                  "kernel_change_every_n_epochs": 0, "kernel_top_channels": 3})
    acc = read_tb(tmp_path)
    # conv1: one colour tile per filter; conv2: one tile per input channel (3 per filter)
    rgb = decode_png(acc.Images("kernels/conv1")[-1].encoded_image_string)
    geo = auto_layout(3, 1, 3, 3)
    assert rgb.shape == (geo["height"], geo["width"], 3)
    grey = decode_png(acc.Images("kernels/conv2")[-1].encoded_image_string)
    geo = auto_layout(5, 3, 3, 3)
    assert grey.shape == (geo["height"], geo["width"], 3)
    assert not (tmp_path / "images" / "feature_maps").exists()
    assert acc.Tags()["histograms"] == []


def test_a_grouped_first_layer_on_rgb_images_is_drawn_grey(tmp_path):
    # groups=3: each filter sees one colour channel, so its kernel is a grey tile
    data = blobs(shape=(3, 5, 5))
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 6, "kernel_size": 3, "groups": 3},
                      "flat": {"type": "flatten"}, "fc": {"type": "dense", "units": 3}}}
    model = build_model(cfg, data.input_shape, seed=0)
    train(tmp_path, data, model, max_epochs=1,
          logger={"feature_maps_every_n_epochs": 0, "histograms_every_n_epochs": 0,
                  "kernel_scaling": "layer"})
    img = decode_png(read_tb(tmp_path).Images("kernels/conv1")[-1].encoded_image_string)
    geo = auto_layout(6, 1, 3, 3)
    assert img.shape == (geo["height"], geo["width"], 3)
    w = model.layers["conv1"].params["weight"]
    s, g = geo["scale"], geo["gap"]
    tile = img[g + 12:g + 12 + 3 * s, g:g + 3 * s][::s, ::s].astype(int)
    assert np.abs(tile - diverging(w[0, 0] / np.abs(w).max())).max() <= 1


def test_per_filter_scaling_and_every_n_zero(tmp_path):
    data = blobs()
    train(tmp_path, data, max_epochs=2,
          logger={"kernel_scaling": "per_filter", "feature_maps_every_n_epochs": 0,
                  "histograms_every_n_epochs": 0, "kernel_change_grid": "off",
                  "classification_every_n_epochs": 0, "png": False, "responses": False})
    acc = read_tb(tmp_path)
    assert set(acc.Tags()["images"]) == {"kernels/conv1", "kernels/conv2"}
    assert not (tmp_path / "images").exists()
    final = load_checkpoint(tmp_path / "checkpoints" / "last").model_state["conv1.weight"]
    img = decode_png(acc.Images("kernels/conv1")[-1].encoded_image_string)
    geo = auto_layout(4, 1, 3, 3)
    s, g = geo["scale"], geo["gap"]
    tile = img[g + 12:g + 12 + 3 * s, g:g + 3 * s][::s, ::s].astype(int)
    w = final[0].astype(np.float64)  # filter 0 (one channel): its own max |w| is full colour
    assert np.abs(tile - diverging(w[0] / np.abs(w).max())).max() <= 1


def test_tensorboard_off_still_writes_pngs(tmp_path):
    train(tmp_path, blobs(), max_epochs=1, logger={"tensorboard": False})
    assert not (tmp_path / "tensorboard").exists()
    assert (tmp_path / "images" / "kernels" / "conv1_epoch001.png").is_file()


def test_logging_does_not_change_the_run(tmp_path):
    off = {"tensorboard": False, "png": False, "kernels_every_n_epochs": 0,
           "feature_maps_every_n_epochs": 0, "histograms_every_n_epochs": 0,
           "classification_every_n_epochs": 0, "hparams": False}
    data = blobs()
    runs = [train(tmp_path / name, data, max_epochs=2, logger=logger)
            for name, logger in (("on", None), ("off", off))]
    for key in ("train_loss", "val_loss", "test_loss"):
        assert runs[0][1][key] == runs[1][1][key]
    for name, value in runs[0][0].model.state_dict().items():
        np.testing.assert_array_equal(value, runs[1][0].model.state_dict()[name])


def test_resume_does_not_log_the_initial_weights_again(tmp_path):
    data = blobs()
    every_epoch = {"kernels_every_n_epochs": 1}
    train(tmp_path, data, max_epochs=2, logger=every_epoch)
    first = (tmp_path / "images" / "kernels" / "conv1_epoch000.png").read_bytes()
    train(tmp_path, data, max_epochs=3, resume=str(tmp_path / "checkpoints"), logger=every_epoch)
    assert (tmp_path / "images" / "kernels" / "conv1_epoch000.png").read_bytes() == first
    assert [e.step for e in read_tb(tmp_path).Images("kernels/conv1")] == [0, 1, 2, 3]


# --- hparams --------------------------------------------------------------------------
def hparams_plugin_view(logdir):
    """(experiment, session groups) as TensorBoard's HParams plugin computes them."""
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    context = backend_context.Context(base_plugin.TBContext(
        logdir=str(logdir), multiplexer=mux,
        data_provider=MultiplexerDataProvider(mux, str(logdir))))
    experiment = get_experiment.Handler(RequestContext(), context, "",
                                        api_pb2.GetExperimentRequest()).run()
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS,
                          api_pb2.STATUS_FAILURE, api_pb2.STATUS_RUNNING])
    groups = list_session_groups.Handler(RequestContext(), context, "", request).run()
    return experiment, groups.session_groups


class Colour(enum.Enum):
    red = "r"


def test_sweep_of_two_runs_is_two_hparams_rows_with_final_metrics(tmp_path):
    data = blobs()
    for job, lr in (("0", 0.05), ("1", 0.02)):
        config = {"optimizer": {"name": "sgd", "lr": lr, "nesterov": False},
                  "model": {"layers": {"conv1": {"filters": 4, "kernel_size": [3, 3]}}},
                  "trainer": {"resume": None}, "seed": 0}
        train(tmp_path / job, data, max_epochs=2, lr=lr, hparams=config,
              logger={"kernels_every_n_epochs": 0, "feature_maps_every_n_epochs": 0,
                      "histograms_every_n_epochs": 0})
    experiment, groups = hparams_plugin_view(tmp_path)

    infos = {h.name: h for h in experiment.hparam_infos}
    assert set(infos) == {"optimizer.name", "optimizer.lr", "optimizer.nesterov",
                          "model.layers.conv1.filters", "model.layers.conv1.kernel_size",
                          "seed"}
    # derived across both runs: only the swept key differs (the dashboard shows it first)
    assert [h.name for h in infos.values() if h.differs] == ["optimizer.lr"]
    assert infos["optimizer.lr"].type == api_pb2.DATA_TYPE_FLOAT64
    assert infos["model.layers.conv1.kernel_size"].type == api_pb2.DATA_TYPE_STRING
    assert infos["optimizer.nesterov"].type == api_pb2.DATA_TYPE_BOOL
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    assert {("val", "epoch/accuracy"), ("val", "epoch/loss"), ("test", "epoch/accuracy"),
            ("train", "epoch/loss"), ("", "monitor/best_val_accuracy")} <= metrics

    assert sorted(g.name for g in groups) == ["0/tensorboard/run", "1/tensorboard/run"]
    for group in groups:
        job = group.name.split("/")[0]
        assert group.hparams["optimizer.lr"].number_value == (0.05 if job == "0" else 0.02)
        assert group.hparams["model.layers.conv1.kernel_size"].string_value == "[3, 3]"
        assert group.hparams["optimizer.name"].string_value == "sgd"
        assert "trainer.resume" not in group.hparams  # None: no cell
        (session,) = group.sessions
        assert session.status == api_pb2.STATUS_SUCCESS
        assert session.end_time_secs >= session.start_time_secs > 0
        metrics = json.loads((tmp_path / job / "metrics.json").read_text())
        values = {(m.name.group, m.name.tag): (m.training_step, m.value)
                  for m in session.metric_values}
        assert values["val", "epoch/accuracy"] == (2, pytest.approx(metrics["val_accuracy"]))
        assert values["test", "epoch/loss"] == (2, pytest.approx(metrics["test_loss"]))
        assert values["", "monitor/best_epoch"] == (2, metrics["best_epoch"])


def test_without_hparams_the_trainer_logs_its_own_settings(tmp_path):
    train(tmp_path / "run", blobs(), max_epochs=1)
    _, (group,) = hparams_plugin_view(tmp_path)
    assert {k: getattr(v, v.WhichOneof("kind")) for k, v in group.hparams.items()} == {
        "seed": "0", "trainer.max_epochs": "1", "trainer.batch_size": "16",
        "optimizer.lr": 0.05}  # integers as text, see test_tensorboard.py


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow is the point
def test_diverged_run_ends_its_session_as_failed(tmp_path):
    with pytest.raises(TrainingDiverged):
        train(tmp_path, blobs(), max_epochs=3, lr=1e12)
    acc = read_tb(tmp_path)
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    end = hparams_metadata.parse_session_end_info_plugin_data(
        content[hparams_metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_FAILURE
    assert [e.step for e in acc.Images("kernels/conv1")][0] == 0  # step 0 kept, readable


def test_flatten_config():
    nested = {"model": {"layers": {"conv1": {"filters": np.int64(16), "kernel_size": [3, 3],
                                             "bias": True}},
                        "name": "small"},
              "optimizer": {"lr": np.float32(0.5), "betas": (0.9, 0.99)},
              "task": Colour.red, "resume": None, "empty": {}, "seed": 7}
    flat = flatten_config(nested)
    assert flat == {"model.layers.conv1.filters": 16, "model.layers.conv1.kernel_size": "[3, 3]",
                    "model.layers.conv1.bias": True, "model.name": "small",
                    "optimizer.lr": 0.5, "optimizer.betas": "[0.9, 0.99]", "task": "red",
                    "seed": 7}
    assert type(flat["model.layers.conv1.filters"]) is int
    assert type(flat["model.layers.conv1.bias"]) is bool
    assert flatten_config(flat) == flat  # already flat: unchanged


# --- settings -------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ({"kernel_scaling": "log"}, r"logger\.kernel_scaling: expected one of fixed, layer, "
                                r"per_filter, got 'log'"),
    ({"kernels_every_n_epochs": -1}, r"logger\.kernels_every_n_epochs: expected an integer"),
    ({"feature_maps_every_n_epochs": 1.5}, r"logger\.feature_maps_every_n_epochs"),
    ({"histograms_every_n_epochs": True}, r"logger\.histograms_every_n_epochs"),
    ({"png": "yes"}, r"logger\.png: expected true or false"),
    ({"kernel_every_n_epochs": 1}, r"logger\.kernel_every_n_epochs: unknown key"),
])
def test_bad_logger_settings_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        parse_logger_settings(override)
    with pytest.raises(ConfigError, match=message):  # the Trainer checks before training
        train(tmp_path, blobs(), max_epochs=1, logger=override)
    assert not (tmp_path / "tensorboard").exists()


def test_logger_defaults_are_the_schema_defaults():
    settings = parse_logger_settings(None)
    assert (settings.tensorboard, settings.png, settings.hparams) == (True, True, True)
    assert settings.kernel_scaling == "fixed"
    assert parse_logger_settings({"kernels_every_n_epochs": 5}).kernels_every_n_epochs == 5


def test_a_mistyped_logger_key_gets_the_closest_one():
    with pytest.raises(ConfigError, match=r"^logger\.kernel_every_n_epochs: unknown key; did you "
                                          r"mean 'logger\.kernels_every_n_epochs'\? \(valid keys: "
                                          r"tensorboard, kernels_every_n_epochs, "):
        parse_logger_settings({"kernel_every_n_epochs": 1})
