"""The predictions/ views (confusion matrix, per-class accuracy bars, misclassified images) and
the HParams experiment record of a run, checked from their documented geometry against
independent references (scikit-learn's confusion matrix, SciPy's softmax)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from tensorboard.plugins.hparams import metadata as hparams_metadata

from convtrain.app.tensorboard_run import config_key, safe_name
from convtrain.training.checkpoint import load_checkpoint
from convtrain.visuals.charts import (BAR_COLOUR, BAR_LENGTH, LABEL_GAP, MAX_CAPTION_WIDTH,
                                      bar_layout, caption_width, labelled_grid_layout,
                                      render_confusion_matrix, render_labelled_grid,
                                      render_per_class_bars)
from convtrain.visuals.hooks.hparams import metric_columns
from tests.visuals.pillow_png import decode_png
from tests.visuals.test_tb_logging import blobs, read_tb, train, two_conv_model

NAMES = ("zero", "one", "two")
ONLY_PREDICTIONS = {"kernels_every_n_epochs": 0, "feature_maps_every_n_epochs": 0,
                    "histograms_every_n_epochs": 0, "classification_every_n_epochs": 2,
                    "responses": False}


def bar_lengths(image, layout, k):
    rgb = np.asarray(image.convert("RGB"), dtype=int)
    lengths = []
    for i in range(k):
        row = rgb[layout.top + i * layout.row + layout.row // 2, layout.left:]
        is_bar = np.all(row == BAR_COLOUR, axis=1)
        lengths.append(int(np.argmin(is_bar)) if not is_bar.all() else len(is_bar))
    return lengths


def test_per_class_bars_have_the_accuracy_as_length_on_a_fixed_scale():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    predictions = np.array([0, 0, 0, 1, 1, 0, 2, 2, 2, 2, 2, 2])
    cm = sk_confusion_matrix(labels, predictions, labels=[0, 1, 2])
    recall = np.diag(cm) / cm.sum(axis=1)  # 3/4, 1/3, 1
    image = render_per_class_bars(recall, cm.sum(axis=1), NAMES, title="t")
    layout = bar_layout(NAMES, "t")
    assert image.size == (layout.width, layout.height)
    assert bar_lengths(image, layout, 3) == [round(a * BAR_LENGTH) for a in recall]
    # a class without images has no bar
    empty = render_per_class_bars(np.array([np.nan, 0.5, 1.0]), np.array([0, 2, 1]), NAMES)
    assert bar_lengths(empty, bar_layout(NAMES), 3) == [0, BAR_LENGTH // 2, BAR_LENGTH]


def test_labelled_grid_puts_each_image_where_the_layout_says():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(5, 1, 6, 4))
    captions = [("true: a", "pred: b")] * 4 + [("true: a", "pred: " + "long name " * 20)]
    image = render_labelled_grid(images, captions, columns=3)
    layout = labelled_grid_layout(5, 6, 4, 2, columns=3, text_width=caption_width(captions))
    assert layout.cell_width == MAX_CAPTION_WIDTH  # the long caption is cut
    assert (layout.columns, layout.rows, layout.scale) == (3, 2, round(56 / 6))
    assert image.size == (layout.width, layout.height)
    rgb = np.asarray(image)
    s = layout.scale
    for i, x in enumerate(images):
        left, top = layout.image_origin(i)
        tile = rgb[top:top + 6 * s:s, left:left + 4 * s:s, 0].astype(int)
        expected = np.round((x[0] - x.min()) / (x.max() - x.min()) * 255)
        np.testing.assert_array_equal(tile, expected)
        # the caption: black first line, red second line, under the image
        caption = rgb[top + 6 * s + 2:top + layout.cell_height,
                      left - (layout.cell_width - layout.tile_width) // 2:][:, :layout.cell_width]
        first, second = caption[:layout.line], caption[layout.line:2 * layout.line]
        assert (first.sum(axis=2) < 200).any()
        assert ((second[..., 0] > 150) & (second[..., 1] < 100)).any()


@pytest.mark.parametrize("x, y", [(5, 3), (6.5, 4), (7, 2.5), (4.5, 3.5), (5.5, 1.5),
                                  (6.25, 2.75), (3.75, 4.25)])
def test_text_stamped_from_cached_glyphs_equals_pillows_drawing(x, y):
    """The confusion matrix writes its numbers with charts._stamp at fractional positions
    (centred in odd-sized cells); Pillow's own ImageDraw.text at the same position is the
    reference, on white and on a cell colour, in black and white ink."""
    from PIL import Image, ImageDraw, ImageFont

    from convtrain.visuals.charts import _stamp
    for background, ink in (((255, 255, 255), (0, 0, 0)), ((40, 80, 140), (255, 255, 255))):
        for text in ("7", "1234", "predicted"):
            reference = Image.new("RGB", (80, 24), background)
            ImageDraw.Draw(reference).text((x, y), text, fill=ink,
                                           font=ImageFont.load_default())
            canvas = np.full((24, 80, 3), background, np.uint8)
            _stamp(canvas, x, y, text, ink)
            np.testing.assert_array_equal(canvas, np.asarray(reference))


def test_classification_views_of_a_run(tmp_path):
    data = blobs(n=(48, 30, 12))
    model = two_conv_model(data)
    train(tmp_path, data, model, max_epochs=3, logger={**ONLY_PREDICTIONS,
                                                       "misclassified_images": 4})
    acc = read_tb(tmp_path)
    views = ("confusion_matrix", "per_class_accuracy", "misclassified")
    assert set(acc.Tags()["images"]) == {f"predictions/{v}" for v in views}
    for view in views:  # period 2 of 3 epochs, and no step 0
        assert [e.step for e in acc.Images(f"predictions/{view}")] == [2, 3]
        png = (tmp_path / "images" / "predictions" / f"{view}_epoch003.png").read_bytes()
        np.testing.assert_array_equal(
            decode_png(png), decode_png(acc.Images(f"predictions/{view}")[-1].encoded_image_string))

    # the final pictures show the final weights' predictions on the val split
    model.load_state_dict(load_checkpoint(tmp_path / "checkpoints" / "last").model_state)
    logits = np.asarray(model.forward(data.val.x, training=False), dtype=np.float64)
    probabilities = softmax(logits, axis=1)
    predicted = probabilities.argmax(axis=1)
    cm = sk_confusion_matrix(data.val.y, predicted, labels=[0, 1, 2])
    title = (f"val, epoch 3: 30 images, accuracy {np.trace(cm) / 30:.4f}")
    expected = np.asarray(render_confusion_matrix(cm, title=title).convert("RGB"))
    final = decode_png(acc.Images("predictions/confusion_matrix")[-1].encoded_image_string)
    np.testing.assert_array_equal(final, expected)

    bars = decode_png(acc.Images("predictions/per_class_accuracy")[-1].encoded_image_string)
    from PIL import Image
    layout = bar_layout(("0", "1", "2"), "title")
    recall = np.diag(cm) / np.maximum(cm.sum(axis=1), 1)
    assert bar_lengths(Image.fromarray(bars), layout, 3) == \
        [round(a * BAR_LENGTH) for a in recall]

    wrong = np.flatnonzero(predicted != data.val.y)
    grid = decode_png(acc.Images("predictions/misclassified")[-1].encoded_image_string)
    if wrong.size == 0:
        assert grid.shape[0] < 40  # the "no misclassified images" note
        return
    shown = min(4, wrong.size)
    layout = labelled_grid_layout(shown, 6, 6, 2)
    assert grid.shape[0] == layout.height  # one row of cells, each at least as wide as needed
    assert grid.shape[1] >= layout.width
    most_confident = wrong[np.argmax(probabilities[wrong, predicted[wrong]])]
    x = data.val.x[most_confident, 0].astype(np.float64)
    width = (grid.shape[1] - LABEL_GAP) // shown - LABEL_GAP  # the cells' width
    s = layout.scale
    left, top = LABEL_GAP + (width - 6 * s) // 2, LABEL_GAP
    tile = grid[top:top + 6 * s:s, left:left + 6 * s:s, 0].astype(int)
    np.testing.assert_array_equal(tile, np.round((x - x.min()) / (x.max() - x.min()) * 255))


def test_classification_views_read_the_epochs_evaluation_instead_of_a_forward_pass(tmp_path):
    """During training the views cost no forward pass: the eval-mode forward calls are the
    trainer's evaluation alone, with the views on or off (the pictures' content is checked
    against an independent computation above)."""
    data = blobs(n=(48, 30, 12))
    eval_forwards = {}
    for period in (0, 1):
        model = two_conv_model(data)
        forward = model.forward
        calls = []

        def counting(x, *args, training=True, _forward=forward, _calls=calls, **kwargs):
            if not training:
                _calls.append(len(x))
            return _forward(x, *args, training=training, **kwargs)

        model.forward = counting
        train(tmp_path / str(period), data, model, max_epochs=2,
              logger={**ONLY_PREDICTIONS, "classification_every_n_epochs": period})
        eval_forwards[period] = calls
    assert eval_forwards[1] == eval_forwards[0] and sum(eval_forwards[0]) == 2 * (30 + 12)
    assert [e.step for e in read_tb(tmp_path / "1").Images("predictions/confusion_matrix")] == \
        [1, 2]


def test_without_a_val_split_the_views_read_the_test_logits_only_when_due(tmp_path):
    """No val data: the views use the test split; the loop keeps the test logits (gathered
    over several eval batches, equal to a forward pass of the whole split) only at the epochs
    the views are due, and only until on_epoch_end; no empty `val` run appears."""
    from convtrain.optim import build_optimizer, build_schedule
    from convtrain.runtime.backend import get_backend
    from convtrain.training.hooks import Hook
    from convtrain.training.trainer import Trainer
    from convtrain.visuals.run_logger import VisualLogger

    data = blobs(n=(48, 0, 12))
    model = two_conv_model(data)
    seen = {}

    class Record(Hook):
        def on_epoch_end(self, state):
            seen[state.step] = {name: np.array(v) for name, v in state.eval_logits.items()}
            if "test" in seen[state.step]:
                direct = np.asarray(model.forward(data.test.x, training=False))
                np.testing.assert_allclose(seen[state.step]["test"], direct, rtol=1e-5,
                                           atol=1e-6)

    optimizer = build_optimizer({"name": "sgd", "lr": 0.05, "momentum": 0.9}, model)
    trainer = Trainer(model, optimizer, build_schedule({"name": "constant"}, optimizer.lr, 3),
                      data, run_dir=tmp_path, backend=get_backend("numpy"), seed=0,
                      max_epochs=3, batch_size=16, eval_batch_size=5, progress=False,
                      hooks=[VisualLogger(ONLY_PREDICTIONS), Record()])
    trainer.fit()
    assert {step: sorted(kept) for step, kept in seen.items()} == {1: [], 2: ["test"],
                                                                   3: ["test"]}
    assert seen[3]["test"].shape == (12, 3)
    assert trainer.state.eval_logits == {}
    matrices = read_tb(tmp_path).Images("predictions/confusion_matrix")
    assert [e.step for e in matrices] == [2, 3]
    runs = sorted(p.name for p in (tmp_path / "tensorboard" / "run").iterdir() if p.is_dir())
    assert runs == ["test", "train"]


def test_hparams_metrics_put_the_monitored_metric_and_best_values_first():
    first = [(m.group, m.tag) for m in metric_columns("val_accuracy")[:5]]
    assert first == [("", "monitor/best_val_accuracy"), ("val", "epoch/accuracy"),
                     ("", "monitor/best_epoch"), ("", "monitor/best_test_accuracy"),
                     ("val", "epoch/loss")]
    loss = [(m.group, m.tag) for m in metric_columns("train_loss")[:5]]
    assert loss == [("", "monitor/best_train_loss"), ("train", "epoch/loss"),
                    ("", "monitor/best_epoch"), ("", "monitor/best_val_accuracy"),
                    ("", "monitor/best_test_accuracy")]
    tags = [(m.group, m.tag) for m in metric_columns("val_accuracy")]
    assert len(tags) == len(set(tags))  # each once


def test_a_run_with_columns_writes_the_experiment_record_and_its_texts(tmp_path):
    from convtrain.errors import InternalError
    from convtrain.visuals.run_logger import VisualLogger

    hparams = {"seed": 3, "optimizer": {"lr": 0.05, "name": "sgd"}}
    train(tmp_path / "a", blobs(), max_epochs=1, logger=ONLY_PREDICTIONS, hparams=hparams,
          config_text="seed: 3\n", visuals={
              "run_name": "seed=3", "command": "convtrain seed=3",
              "columns": ["seed", "optimizer.name", "not.a.key"], "differing": ["seed"]})
    acc = read_tb(tmp_path / "a", name="seed=3")
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    experiment = hparams_metadata.parse_experiment_plugin_data(
        content[hparams_metadata.EXPERIMENT_TAG])
    assert [(h.name, h.differs) for h in experiment.hparam_infos] == [
        ("seed", True), ("optimizer.name", False)]
    assert [m.display_name for m in experiment.metric_infos[:2]] == [
        "best_val_accuracy", "val_accuracy"]
    texts = {tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()
             for tag in ("config", "command")}
    assert texts == {"config": "```yaml\nseed: 3\n```", "command": "```\nconvtrain seed=3\n```"}
    # without columns (the Python API's default) TensorBoard derives the experiment
    train(tmp_path / "b", blobs(), max_epochs=1, logger=ONLY_PREDICTIONS, hparams=hparams)
    content = read_tb(tmp_path / "b").PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert hparams_metadata.EXPERIMENT_TAG not in content
    with pytest.raises(InternalError, match="one path component"):
        VisualLogger(run_name="a/b")


def test_run_names_are_one_safe_directory():
    assert safe_name("optimizer.lr=0.01,seed=2") == "optimizer.lr=0.01,seed=2"
    assert safe_name("data.root=/data/x%") == "data.root=%2Fdata%2Fx%25"
    long = safe_name("model.layers.conv1.filters=" + "9" * 300)
    assert len(long.encode()) <= 160 and long != safe_name("model.layers.conv1.filters="
                                                           + "9" * 301)
    flat = {"model.name": "small_cnn", "model.layers.conv1.filters": 8, "seed": 1}
    assert config_key("model", flat) == ["model.name"]
    assert config_key("seed", flat) == ["seed"]
    assert config_key("model.layers.conv1", flat) == ["model.layers.conv1.filters"]


def test_gradient_histograms_come_from_the_last_full_batch(tmp_path):
    from convtrain.optim import build_optimizer, build_schedule
    from convtrain.runtime.backend import get_backend
    from convtrain.training.hooks import Hook
    from convtrain.training.trainer import Trainer
    from convtrain.visuals.run_logger import VisualLogger

    data = blobs(n=(45, 12, 12))  # batches of 16: 16, 16 and a remainder of 13
    model = two_conv_model(data)

    class Recorder(Hook):  # every batch's conv1 weight gradient, independently of the visual
        def __init__(self):
            self.grads = {}

        def on_train_batch_end(self, state):
            self.grads[state.global_step] = np.array(model.layers["conv1"].grads["weight"])

    recorder = Recorder()
    optimizer = build_optimizer({"name": "sgd", "lr": 0.05}, model)
    logger = {**ONLY_PREDICTIONS, "classification_every_n_epochs": 0,
              "histograms_every_n_epochs": 1}
    Trainer(model, optimizer, build_schedule({"name": "constant"}, optimizer.lr, 2), data,
            run_dir=tmp_path, backend=get_backend("numpy"), seed=0, max_epochs=2,
            batch_size=16, progress=False, hooks=[VisualLogger(logger), recorder]).fit()
    events = read_tb(tmp_path).Histograms("histograms/conv1/weight_grad")
    assert [e.step for e in events] == [1, 2]
    for event, last_full_step in zip(events, (2, 5)):  # 3 batches per epoch, the 2nd is full
        expected = recorder.grads[last_full_step]
        h = event.histogram_value
        assert (h.min, h.max, h.num) == (float(expected.min()), float(expected.max()),
                                         expected.size)
        assert h.sum == pytest.approx(float(expected.sum(dtype=np.float64)))


def test_a_run_resumed_in_a_new_directory_has_its_input_picture(tmp_path):
    data = blobs()
    logger = {"kernels_every_n_epochs": 0, "histograms_every_n_epochs": 0,
              "classification_every_n_epochs": 0, "responses": False}
    train(tmp_path / "first", data, max_epochs=1, logger=logger)
    train(tmp_path / "resumed", data, max_epochs=2, logger=logger,
          resume=str(tmp_path / "first" / "checkpoints"))
    acc = read_tb(tmp_path / "resumed")
    assert [e.step for e in acc.Images("feature_maps/input")] == [0]
    assert [e.step for e in acc.Images("feature_maps/conv1")] == [2]  # no step 0 on resume
    first = read_tb(tmp_path / "first").Images("feature_maps/input")[0]
    assert acc.Images("feature_maps/input")[0].encoded_image_string == first.encoded_image_string
