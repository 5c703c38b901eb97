"""The response views and fixed samples as pictures and as a hook of real (tiny) Trainer runs:
the fixed samples' rule, each grid's geometry and content from its documented formula, when
the heavy views run, and that they change nothing a run computes."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from convtrain.data import load_dataset
from convtrain.data.splits import ArraySplit
from convtrain.nn.model import build_model
from convtrain.optim import build_optimizer, build_schedule
from convtrain.runtime.backend import get_backend
from convtrain.training.checkpoint import load_checkpoint
from convtrain.training.trainer import Trainer
from convtrain.visuals.hooks import responses as views
from convtrain.visuals.run_logger import VisualLogger
from convtrain.visuals.samples import feature_maps_by_sample, fixed_samples
from tests.visuals.pillow_png import decode_png
from tests.visuals.test_kernel_grid import auto_layout
from tests.visuals.test_kernel_grid import tile as cell_tile

SEP = 2  # separator pixels of the attribution grid
ORANGE = (255, 140, 0)  # the separators and label bands of grey cells (the grey kernel map's)


def response_layout(f, k, h, w):
    """The kernel views' automatic layout with tiles of at least 16 px (responses.MIN_TILE)."""
    return auto_layout(f, k, h, w, min_tile=16)


def filter_cells(f, k, h, w):
    """(height, width, 3) of a grid of f labelled cells of k tiles h x w (the kernel views')."""
    geo = response_layout(f, k, h, w)
    return geo["height"], geo["width"], 3


def cells(rows, cols, h, w, scale):
    return rows * (h * scale + SEP) + SEP, cols * (w * scale + SEP) + SEP


def tile(grid, row, col, h, w, scale):
    """The (row, col) tile of a response grid, downsampled back to h x w."""
    y, x = SEP + row * (h * scale + SEP), SEP + col * (w * scale + SEP)
    return grid[y:y + h * scale:scale, x:x + w * scale:scale]


# --- fixed samples ---------------------------------------------------------------------------
def test_fixed_samples_are_the_first_test_image_of_each_class_whatever_the_seed():
    runs = [load_dataset({"name": "digits", "subset": 500 + 300 * seed, "val_fraction": 0.2},
                         seed=seed) for seed in (0, 1)]
    assert not np.array_equal(runs[0].val.x[:5], runs[1].val.x[:5])  # the seed changes val
    picked = [fixed_samples(run) for run in runs]
    test = runs[0].test
    expected = [int(np.flatnonzero(test.y == k)[0]) for k in range(10)]
    for run, samples in zip(runs, picked):  # the same images (each run normalises its own way)
        assert list(samples.indices) == expected and samples.split == "test"
        np.testing.assert_array_equal(samples.labels, np.arange(10))
        np.testing.assert_array_equal(samples.x, run.test.x[expected])


def test_fixed_samples_fall_back_to_val_then_train():
    x = np.arange(6 * 4, dtype=np.float32).reshape(6, 1, 2, 2)
    y = np.array([2, 1, 2, 0, 1, 0])
    empty = ArraySplit(x[:0], y[:0])
    data = SimpleNamespace(train=ArraySplit(x, y), val=ArraySplit(x[2:], y[2:]), test=empty)
    samples = fixed_samples(data)
    assert samples.split == "val" and list(samples.indices) == [1, 2, 0]  # classes 0, 1, 2
    np.testing.assert_array_equal(samples.x, x[[3, 4, 2]])
    data.val = empty
    assert fixed_samples(data).split == "train"
    data.train = empty
    assert fixed_samples(data) is None


def test_feature_maps_by_sample_scales_each_channel_over_the_samples():
    maps = np.random.default_rng(0).normal(size=(3, 2, 4, 5))
    maps[:, 1] *= 100  # a strong channel does not change the other's scale
    grid = feature_maps_by_sample(maps, scale=2)
    assert grid.shape == (3 * (4 * 2 + 1) + 1, 2 * (5 * 2 + 1) + 1)
    for f in range(2):
        unit = (maps[:, f] - maps[:, f].min()) / (maps[:, f].max() - maps[:, f].min())
        for k in range(3):
            y, x = 1 + k * 9, 1 + f * 11
            np.testing.assert_array_equal(grid[y:y + 8:2, x:x + 10:2],
                                          np.round(unit[k] * 255).astype(np.uint8))


# --- the response grids ----------------------------------------------------------------------
def test_activation_max_grid_is_the_kernel_views_cell_grid_with_symmetric_scaling():
    images = np.random.default_rng(1).normal(size=(5, 1, 3, 4))
    grid = views.activation_max_grid(images)
    geo = response_layout(5, 1, 3, 4)  # one labelled cell per filter, fitted to a card
    assert grid.shape == (geo["height"], geo["width"], 3)
    for f in range(5):
        unit = (images[f, 0] / np.abs(images[f]).max() + 1) / 2  # 0 -> mid-grey
        np.testing.assert_array_equal(cell_tile(grid, geo, f, 0, 3, 4, geo["scale"])[..., 0],
                                      np.round(unit * 255).astype(np.uint8))
    # the border and the label bands are orange; each band holds its filter's label (dark text)
    assert np.all(grid[:geo["gap"]] == ORANGE) and np.all(grid[:, :geo["gap"]] == ORANGE)
    band = grid[geo["gap"]:geo["gap"] + 12, geo["gap"]:geo["gap"] + geo["cell_w"]]
    assert (band.sum(axis=2) < 200).any()


def test_top_patches_grid_cells_are_filters_and_padding_is_marked():
    rng = np.random.default_rng(2)
    crops = rng.uniform(-1, 3, size=(4, 2, 1, 5, 5))  # 4 filters, k = 2
    inside = np.ones((4, 2, 5, 5), bool)
    inside[1, 0, :2] = False  # filter 1's best crop starts above the image
    grid = views.top_patches_grid(crops, inside, -1.0, 3.0)
    geo = response_layout(4, 2, 5, 5)  # a cell per filter, its k crops side by side
    assert grid.shape == (geo["height"], geo["width"], 3)
    for f in range(4):
        for rank in range(2):
            expected = np.repeat(np.round((crops[f, rank, 0] + 1) / 4 * 255)
                                 .astype(np.uint8)[..., None], 3, axis=2)
            expected[~inside[f, rank]] = views.PADDING
            np.testing.assert_array_equal(cell_tile(grid, geo, f, rank, 5, 5, geo["scale"]),
                                          expected)


def test_attribution_grid_rows_image_saliency_gradcam():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 1, 6, 6))
    sal = rng.uniform(0, 1, size=(2, 6, 6))
    cams = rng.uniform(0, 2, size=(2, 6, 6))
    grid = views.attribution_grid(x, sal, cams)
    scale = round(64 / 6)
    assert grid.shape == cells(3, 2, 6, 6, scale) + (3,)
    for k in range(2):
        grey = np.round((x[k, 0] - x[k].min()) / (x[k].max() - x[k].min()) * 255)
        np.testing.assert_array_equal(tile(grid, 0, k, 6, 6, scale)[..., 1], grey)
        top = np.percentile(sal[k], 99)
        np.testing.assert_array_equal(tile(grid, 1, k, 6, 6, scale)[..., 0],
                                      np.round(np.clip(sal[k] / top, 0, 1) * 255))
        heat = views.heat_colours(cams[k] / cams[k].max()).astype(np.float64)
        np.testing.assert_array_equal(tile(grid, 2, k, 6, 6, scale),
                                      np.round(0.5 * grey[..., None] + 0.5 * heat))


def test_heat_colours_run_from_dark_to_light():
    colours = views.heat_colours(np.linspace(0, 1, 9)).astype(int)
    np.testing.assert_array_equal(colours[0], views.HEAT[0])
    np.testing.assert_array_equal(colours[-1], views.HEAT[-1])
    assert np.all(np.diff(colours.sum(axis=1)) > 0)  # brightness grows with the value


# --- the hook in a training run --------------------------------------------------------------
def blobs(seed=0, shape=(1, 8, 8), k=3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, int(np.prod(shape))))

    def split(count):
        y = np.arange(count) % k
        x = centres[y] + 0.3 * rng.standard_normal((count, centres.shape[1]))
        return ArraySplit(x.reshape(count, *shape).astype(np.float32), y.astype(np.int64))

    return SimpleNamespace(train=split(48), val=split(12), test=split(12), num_classes=k,
                           input_shape=shape, name="blobs", class_names=("a", "b", "c"))


def train(run_dir, data, logger, max_epochs=3, graph=False, **kw):
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1},
                      "relu1": {"type": "relu"}, "pool1": {"type": "maxpool2d", "kernel_size": 2},
                      "conv2": {"type": "conv2d", "filters": 3, "kernel_size": 3},
                      "relu2": {"type": "relu"}, "flat": {"type": "flatten"},
                      "drop": {"type": "dropout", "p": 0.3},  # draws from its own stream
                      "fc": {"type": "dense", "units": data.num_classes}}}
    model = build_model(cfg, data.input_shape, seed=0)
    if graph:
        model.is_chain = False  # what a graph model (layers with several inputs) says
    optimizer = build_optimizer({"name": "sgd", "lr": 0.05, "momentum": 0.9}, model)
    schedule = build_schedule({"name": "constant"}, optimizer.lr, max_epochs)
    Trainer(model, optimizer, schedule, data, run_dir=run_dir, backend=get_backend("numpy"),
            seed=0, max_epochs=max_epochs, batch_size=16, progress=False,
            hooks=[VisualLogger({"kernels_every_n_epochs": 0, "feature_maps_every_n_epochs": 0,
                                 "classification_every_n_epochs": 0,
                                 "histograms_every_n_epochs": 1, **logger})], **kw).fit()
    acc = EventAccumulator(str(Path(run_dir) / "tensorboard" / "run"),
                           size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return acc


RESPONSE_TAGS = {"activation_max/conv1", "activation_max/conv2", "top_patches/conv1",
                 "top_patches/conv2", "attribution/relu2"}


def test_heavy_views_run_at_the_end_only_by_default_and_change_nothing(tmp_path):
    data = blobs()
    acc = train(tmp_path / "on", data, {})
    assert set(acc.Tags()["images"]) == RESPONSE_TAGS
    for tag in RESPONSE_TAGS:
        assert [e.step for e in acc.Images(tag)] == [3]
    # run after every epoch, the views change nothing the run computes (no dropout draws, no
    # batch statistics, gradients left as they were)
    every = train(tmp_path / "every", data, {"responses_every_n_epochs": 1})
    assert [e.step for e in every.Images("activation_max/conv1")] == [1, 2, 3]
    off = train(tmp_path / "off", data, {"responses": False})
    assert off.Tags()["images"] == []
    grads = "histograms/conv1/weight_grad"
    assert len(every.Histograms(grads)) == 3
    for a, b in zip(every.Histograms(grads), off.Histograms(grads)):
        assert a.histogram_value == b.histogram_value
    weights = [load_checkpoint(tmp_path / run / "checkpoints" / "last").model_state
               for run in ("every", "off")]
    for key in weights[0]:
        np.testing.assert_array_equal(weights[0][key], weights[1][key])

    # geometry: conv2 sees an 8x8 window (3x3 p1 -> pool 2 -> 3x3), 3 filters, k = 8 of the 12
    # validation images; the attribution grid has the 3 fixed samples in columns
    patches = decode_png(acc.Images("top_patches/conv2")[0].encoded_image_string)
    assert patches.shape == filter_cells(3, 8, 8, 8)
    pngs = sorted(p.relative_to(tmp_path / "on" / "images").as_posix()
                  for p in (tmp_path / "on" / "images").rglob("*.png"))
    assert pngs == sorted(f"{tag}_epoch003.png" for tag in RESPONSE_TAGS)
    attribution = decode_png(acc.Images("attribution/relu2")[0].encoded_image_string)
    assert attribution.shape == cells(3, 3, 8, 8, 8) + (3,)


def test_responses_every_n_epochs_and_top_k(tmp_path):
    acc = train(tmp_path, blobs(), {"responses_every_n_epochs": 2, "responses_top_k": 2},
                max_epochs=5)
    assert [e.step for e in acc.Images("activation_max/conv1")] == [2, 4, 5]
    patches = decode_png(acc.Images("top_patches/conv1")[-1].encoded_image_string)
    assert patches.shape == filter_cells(4, 2, 3, 3)


@pytest.mark.parametrize(("override", "message"), [
    ({"responses_top_k": 0}, r"logger\.responses_top_k"),
    ({"responses_every_n_epochs": -1}, r"logger\.responses_every_n_epochs"),
    ({"responses": "maybe"}, r"logger\.responses"),
])
def test_bad_settings_name_the_key(override, message):
    from convtrain.errors import ConfigError
    from convtrain.visuals.settings import parse_logger_settings
    with pytest.raises(ConfigError, match=message):
        parse_logger_settings(override)


def test_a_resumed_run_logs_the_samples_and_its_final_responses(tmp_path):
    data = blobs()
    train(tmp_path, data, {"feature_maps_every_n_epochs": 1}, max_epochs=2)
    events = tmp_path / "tensorboard" / "run"
    first = sorted(events.glob("events.out.tfevents.*"))
    train(tmp_path, data, {"feature_maps_every_n_epochs": 1}, max_epochs=3,
          resume=str(tmp_path / "checkpoints"))
    [resumed] = set(sorted(events.glob("events.out.tfevents.*"))) - set(first)
    acc = EventAccumulator(str(resumed), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("feature_maps/input")] == [0]
    assert [e.step for e in acc.Images("feature_maps/conv1")] == [3]
    assert [e.step for e in acc.Images("activation_max/conv1")] == [3]


def test_a_graph_model_gets_the_saliency_row_and_one_warning(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="convtrain"):
        acc = train(tmp_path, blobs(), {}, graph=True)
    assert acc.Tags()["images"] == ["attribution/saliency"]
    image = decode_png(acc.Images("attribution/saliency")[0].encoded_image_string)
    assert image.shape == cells(2, 3, 8, 8, 8) + (3,)  # image and saliency rows only
    warnings = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "need a chain model" in warnings[0]
