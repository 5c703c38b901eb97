"""The kernel hooks in real (tiny) Trainer runs, read back with TensorBoard's EventAccumulator:
the fixed colour limit across epochs and resumes, the kernels_change records (scalars,
histograms, |W - W0| grid) and the per-filter distances, each against NumPy on the weights
(the model's before training, the checkpoint's after)."""
from __future__ import annotations

import numpy as np
import pytest

from convtrain.errors import ConfigError
from convtrain.training.checkpoint import load_checkpoint
from convtrain.visuals.settings import parse_logger_settings
from tests.visuals.pillow_png import decode_png
from tests.visuals.test_kernel_grid import WHITE, ORANGE, auto_layout, diverging
from tests.visuals.test_tb_logging import blobs, read_tb, train, two_conv_model

QUIET = {"feature_maps_every_n_epochs": 0, "histograms_every_n_epochs": 0, "hparams": False,
         "kernels_every_n_epochs": 1}


def weights_of(model):
    return {name: np.array(v, np.float64) for name, v in model.state_dict().items()}


def final_weights(run_dir):
    return {k: np.asarray(v, np.float64)
            for k, v in load_checkpoint(run_dir / "checkpoints" / "last").model_state.items()}


def first_tile(png_or_event, geo):
    """Cell 0, tile 0 of a kernel grid, one pixel per weight (int RGB)."""
    data = png_or_event if isinstance(png_or_event, bytes) else \
        png_or_event.encoded_image_string
    img = decode_png(data)
    s, g = geo["scale"], geo["gap"]
    return img[g + 12:g + 12 + 3 * s, g:g + 3 * s][::s, ::s].astype(int)


def test_fixed_scaling_draws_every_epoch_with_the_initial_limit(tmp_path):
    data = blobs()
    model = two_conv_model(data)
    initial = weights_of(model)
    margin = 1.25
    train(tmp_path, data, model, max_epochs=3, lr=0.2,
          logger={**QUIET, "kernel_fixed_margin": margin})
    final = final_weights(tmp_path)
    limit = margin * np.abs(initial["conv1.weight"]).max()
    geo = auto_layout(4, 1, 3, 3)
    events = {e.step: e for e in read_tb(tmp_path).Images("kernels/conv1")}
    assert sorted(events) == [0, 1, 2, 3]
    for step, weights in ((0, initial), (3, final)):
        expected = diverging(weights["conv1.weight"][0, 0] / limit)
        assert np.abs(first_tile(events[step], geo) - expected).max() <= 1
    # the weights moved, so the picture did (a limit recomputed each epoch could hide that)
    assert not np.array_equal(first_tile(events[0], geo), first_tile(events[3], geo))


def test_initial_kernels_are_kept_for_a_resumed_run(tmp_path):
    data = blobs()
    model = two_conv_model(data)
    initial = weights_of(model)
    train(tmp_path, data, model, max_epochs=1, logger=QUIET)
    with np.load(tmp_path / "initial_kernels.npz") as stored:
        assert sorted(stored.files) == ["__epoch__", "conv1", "conv2"]
        np.testing.assert_array_equal(stored["conv2"], initial["conv2.weight"])
    train(tmp_path, data, two_conv_model(data, seed=5), max_epochs=2, logger=QUIET,
          resume=str(tmp_path / "checkpoints"))
    final = final_weights(tmp_path)
    acc = read_tb(tmp_path)
    w, w0 = final["conv2.weight"], initial["conv2.weight"]
    [event] = [e for e in acc.Scalars("kernels_change/conv2/distance_from_init") if e.step == 2]
    assert event.value == pytest.approx(np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-5)
    # and the fixed limit is still the initial weights' one
    [image] = [e for e in acc.Images("kernels/conv1") if e.step == 2]
    limit = np.abs(initial["conv1.weight"]).max()
    expected = diverging(final["conv1.weight"][0, 0] / limit)
    assert np.abs(first_tile(image, auto_layout(4, 1, 3, 3)) - expected).max() <= 1


def assert_epoch2_distance_from(run, w0):
    """The run's conv1 distance_from_init scalar at epoch 2 is ||W - w0|| / ||w0|| for its
    final weights W."""
    w = final_weights(run)["conv1.weight"]
    [event] = [e for e in read_tb(run).Scalars("kernels_change/conv1/distance_from_init")
               if e.step == 2]
    assert event.value == pytest.approx(np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-5)


def test_a_resume_into_a_new_directory_measures_from_the_first_runs_start(tmp_path):
    data = blobs()
    model = two_conv_model(data)
    initial = weights_of(model)
    train(tmp_path / "first", data, model, max_epochs=1, logger=QUIET)
    second = tmp_path / "second"
    train(second, data, two_conv_model(data, seed=5), max_epochs=2, logger=QUIET,
          resume=str(tmp_path / "first" / "checkpoints"))
    with np.load(second / "initial_kernels.npz") as stored:  # kept for its own resumes
        assert int(stored["__epoch__"]) == 0
        np.testing.assert_array_equal(stored["conv1"], initial["conv1.weight"])
    assert_epoch2_distance_from(second, initial["conv1.weight"])


def test_a_resume_without_the_file_measures_from_the_weights_it_resumed_from(tmp_path):
    data = blobs()
    train(tmp_path, data, max_epochs=1, logger=QUIET)
    resumed_from = final_weights(tmp_path)
    (tmp_path / "initial_kernels.npz").write_bytes(b"not an npz")
    train(tmp_path, data, max_epochs=2, logger=QUIET, resume=str(tmp_path / "checkpoints"))
    with np.load(tmp_path / "initial_kernels.npz") as stored:
        assert int(stored["__epoch__"]) == 1
        np.testing.assert_array_equal(stored["conv1"], resumed_from["conv1.weight"])
    assert_epoch2_distance_from(tmp_path, resumed_from["conv1.weight"])


def test_kernels_change_scalars_histograms_and_the_change_grid(tmp_path):
    data = blobs()
    model = two_conv_model(data)
    initial = weights_of(model)
    train(tmp_path, data, model, max_epochs=2, lr=0.2,
          logger={**QUIET, "kernel_change_every_n_epochs": 2, "kernels_every_n_epochs": 2})
    final = final_weights(tmp_path)
    acc = read_tb(tmp_path)
    for layer in ("conv1", "conv2"):
        w, w0 = final[f"{layer}.weight"], initial[f"{layer}.weight"]
        tag = f"kernels_change/{layer}"
        distance = acc.Scalars(f"{tag}/distance_from_init")
        norm = acc.Scalars(f"{tag}/norm_vs_init")
        assert [e.step for e in distance] == [0, 2] and [e.step for e in norm] == [0, 2]
        assert distance[0].value == 0 and norm[0].value == pytest.approx(1)
        assert distance[1].value == pytest.approx(
            np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-5)
        assert norm[1].value == pytest.approx(np.linalg.norm(w) / np.linalg.norm(w0), rel=1e-5)
        per_filter = np.linalg.norm((w - w0).reshape(len(w), -1), axis=1)
        histogram = acc.Histograms(f"{tag}/filter_distance")[-1].histogram_value
        assert histogram.num == len(w)
        assert (histogram.min, histogram.max) == pytest.approx((per_filter.min(),
                                                               per_filter.max()), rel=1e-5)
        norms = np.linalg.norm(w.reshape(len(w), -1), axis=1)
        histogram = acc.Histograms(f"{tag}/filter_norm")[-1].histogram_value
        assert histogram.sum == pytest.approx(norms.sum(), rel=1e-5)
    # |W - W0| only once something moved; fixed limit = max |W0|, white -> orange
    assert [e.step for e in acc.Images("kernels_change/conv1")] == [2]
    delta = np.abs(final["conv1.weight"][0, 0] - initial["conv1.weight"][0, 0])
    v = np.clip(delta / np.abs(initial["conv1.weight"]).max(), 0, 1)[..., None]
    expected = np.round(np.array(WHITE) + v * (np.array(ORANGE) - np.array(WHITE)))
    image = acc.Images("kernels_change/conv1")[0]
    assert np.abs(first_tile(image, auto_layout(4, 1, 3, 3)) - expected).max() <= 1
    png = tmp_path / "images" / "kernels_change" / "conv1_epoch002.png"
    np.testing.assert_array_equal(decode_png(png.read_bytes()),
                                  decode_png(image.encoded_image_string))


def test_when_the_change_grid_is_drawn(tmp_path):
    data = blobs()
    train(tmp_path / "off", data, max_epochs=1, logger={**QUIET, "kernel_change_grid": "off"})
    assert "kernels_change/conv1" not in read_tb(tmp_path / "off").Tags()["images"]
    assert "kernels/conv1" in read_tb(tmp_path / "off").Tags()["images"]
    # the defaults: kernels every 5 epochs, step 0 and the last epoch; the change grid at the
    # last; the change curves every epoch, the per-filter change histograms with the grids
    train(tmp_path / "default", data, max_epochs=6, logger={"feature_maps_every_n_epochs": 0})
    acc = read_tb(tmp_path / "default")
    assert [e.step for e in acc.Images("kernels/conv2")] == [0, 5, 6]
    assert [e.step for e in acc.Images("kernels_change/conv2")] == [6]
    assert [e.step for e in acc.Scalars("kernels_change/conv2/distance_from_init")] == \
        list(range(7))
    assert [e.step for e in acc.Histograms("kernels_change/conv2/filter_distance")] == [0, 5, 6]
    train(tmp_path / "every", data, max_epochs=3,
          logger={**QUIET, "kernels_every_n_epochs": 2, "kernel_change_grid": "every"})
    assert [e.step for e in read_tb(tmp_path / "every").Images("kernels_change/conv1")] == [2, 3]


def test_per_filter_distances_from_the_initial_filters(tmp_path):
    data = blobs()
    model = two_conv_model(data, f1=3)
    initial = weights_of(model)
    train(tmp_path, data, model, max_epochs=1,
          logger={**QUIET, "weight_norms_every_n_epochs": 1, "kernels_every_n_epochs": 0,
                  "kernel_change_every_n_epochs": 0, "png": False})
    final = final_weights(tmp_path)
    acc = read_tb(tmp_path)
    for k in range(3):
        events = acc.Scalars(f"weight_distances/conv1/filter_{k}")
        assert [e.step for e in events] == [0, 1] and events[0].value == 0
        expected = np.linalg.norm(final["conv1.weight"][k] - initial["conv1.weight"][k])
        assert events[1].value == pytest.approx(expected, rel=1e-5)


def test_nothing_written_when_nobody_would_see_it(tmp_path):
    train(tmp_path, blobs(), max_epochs=1, logger={"tensorboard": False, "png": False})
    assert not (tmp_path / "initial_kernels.npz").exists()
    assert not (tmp_path / "images").exists()


def test_kernel_settings_defaults_and_errors():
    settings = parse_logger_settings(None)
    assert (settings.kernel_scaling, settings.kernel_fixed_margin, settings.kernel_colormap,
            settings.kernel_max_filters, settings.kernel_top_channels,
            settings.kernel_change_every_n_epochs, settings.kernel_change_grid,
            settings.kernels_every_n_epochs) == ("fixed", 1.0, "diverging", 32, 2, 1, "last", 5)
    for override, message in (
            ({"kernel_fixed_margin": 0}, r"^logger\.kernel_fixed_margin: expected a number > 0"),
            ({"kernel_colormap": "jet"}, r"^logger\.kernel_colormap: expected one of diverging, "
                                         r"grey, got 'jet'"),
            ({"kernel_max_filters": 0}, r"^logger\.kernel_max_filters: expected a positive "),
            ({"kernel_top_channels": 2.5}, r"^logger\.kernel_top_channels: expected"),
            ({"kernel_change_every_n_epochs": -1}, r"^logger\.kernel_change_every_n_epochs")):
        with pytest.raises(ConfigError, match=message):
            parse_logger_settings(override)
