"""``convtrain.load_run``: a trained run comes back with its weights, config and preprocessing.

The reference is the training run itself: the trainer's own test accuracy (metrics.json) and a
model rebuilt by hand from the run's config and checkpoint tensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import convtrain
from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.data import load_dataset
from convtrain.data.digits import read_digits
from convtrain.errors import ConfigError
from convtrain.inference import load_run, resolve_run_checkpoint
from convtrain.nn.model import build_model
from convtrain.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """small_cnn trained on digits for 2 epochs (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["trainer.max_epochs=2", "logger.tensorboard=false", "logger.png=false",
                                          "trainer.progress=false"])
    run(cfg, run_dir=run_dir)
    return run_dir


def test_predictions_reproduce_the_trainers_test_accuracy(trained):
    loaded = load_run(trained, checkpoint="last")
    raw = read_digits(None).test  # pixels as the dataset stores them (0..16)
    accuracy = float(np.mean(loaded.predict(raw.x) == raw.y))
    metrics = json.loads((trained / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-12)
    assert loaded.epoch == 2
    assert loaded.class_names == tuple(str(d) for d in range(10))


def test_preprocessing_is_the_training_one(trained):
    loaded = load_run(trained)
    data = load_dataset(loaded.config["data"], seed=loaded.config["seed"])
    raw = read_digits(None).test.x
    assert loaded.preprocessing.pixel_max == 16.0
    np.testing.assert_array_equal(loaded.preprocessing.apply(raw), data.test.x)


def test_weights_are_the_chosen_checkpoints(trained):
    for which in ("best", "last"):
        loaded = load_run(trained, checkpoint=which)
        tensors = load_checkpoint(trained / "checkpoints" / f"{which}.safetensors").model_state
        state = loaded.model.state_dict()
        assert set(state) == set(tensors)
        for name, value in tensors.items():
            np.testing.assert_array_equal(state[name], value)


def test_probabilities_are_the_softmax_of_a_model_rebuilt_by_hand(trained):
    loaded = load_run(trained)
    raw = read_digits(None).test.x[:50]
    model = build_model(loaded.config["model"], (1, 8, 8))
    model.load_state_dict(load_checkpoint(loaded.checkpoint).model_state)
    logits = model.forward(loaded.preprocessing.apply(raw), training=False).astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    proba = loaded.predict_proba(raw)
    np.testing.assert_allclose(proba, expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(loaded.predict(raw), expected.argmax(axis=1))


def test_public_name_and_file_paths(trained):
    assert convtrain.load_run is load_run
    file = trained / "checkpoints" / "last.safetensors"
    assert load_run(file).checkpoint == file
    assert load_run(trained / "checkpoints", checkpoint="last").checkpoint == file
    assert load_run(file.with_suffix(".json")).checkpoint == file
    assert load_run(file).run_dir == trained


@pytest.mark.parametrize("case, expected", [
    ("missing", "does not exist"),
    ("no_best", "holds no best checkpoint"),
    ("which", "checkpoint: expected one of best, last, got 'first'"),
])
def test_bad_paths_are_one_line(trained, tmp_path, case, expected):
    if case == "missing":
        path, which = tmp_path / "nope", "best"
    elif case == "no_best":
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "last.safetensors").write_bytes(
            (trained / "checkpoints" / "last.safetensors").read_bytes())
        path, which = tmp_path, "best"
    else:
        path, which = trained, "first"
    with pytest.raises(ConfigError, match=expected) as info:
        resolve_run_checkpoint(path, which)
    assert "\n" not in str(info.value)
    if case == "no_best":
        assert "set checkpoint=last" in str(info.value)


def test_a_file_that_is_not_a_checkpoint_is_named_as_such(tmp_path):
    (tmp_path / "notimg.png").write_bytes(b"\x89PNG")
    with pytest.raises(ConfigError) as info:
        resolve_run_checkpoint(tmp_path / "notimg.png", where="trainer.resume")
    assert str(info.value) == (f"trainer.resume: '{tmp_path / 'notimg.png'}' is not a "
                               ".safetensors checkpoint (expected a training run's directory "
                               "or its checkpoints/best.safetensors or last.safetensors)")


def test_raw_images_of_the_wrong_shape_are_refused(trained):
    loaded = load_run(trained)
    with pytest.raises(ConfigError, match=r"^raw images of shape \(3, 1, 9, 9\): expected raw "
                                          r"images of shape \(N, 1, 8, 8\)"):
        loaded.predict(np.zeros((3, 1, 9, 9)))
    assert loaded.predict(np.zeros((1, 8, 8))).shape == (1,)  # one sample without N


def test_the_api_takes_the_shapes_and_refuses_the_values_predict_refuses(trained):
    """One rule with task=predict's arrays: (N, H, W) is N grey images for a 1-channel model;
    NaN, out-of-range (0..255 for digits' 0..16) and channels-last arrays are refused."""
    loaded = load_run(trained)
    raw = read_digits(None).test.x[:5]
    np.testing.assert_array_equal(loaded.predict(raw[:, 0]), loaded.predict(raw))
    for bad, expected in [(np.full((2, 1, 8, 8), np.nan), "2 NaN or infinite .* 128|128 NaN"),
                          (raw.astype(np.float64) * 255 / 16 + 1, r"expected raw pixels within 0 \.\. 16"),
                          (np.zeros((8, 8, 1)), r"channels last.*np\.moveaxis")]:
        with pytest.raises(ConfigError, match=expected) as info:
            loaded.predict_proba(bad)
        assert "\n" not in str(info.value)


def test_a_checkpoint_without_an_inputs_record_gets_it_from_the_dataset(trained, tmp_path):
    """Checkpoints written before the inputs record: shape, classes and scale come from the
    dataset's files, the statistics from the data record."""
    from convtrain.training.checkpoint import save_checkpoint

    ckpt = load_checkpoint(trained / "checkpoints" / "best.safetensors")
    meta = {k: v for k, v in ckpt.meta.items() if k not in ("inputs", "format")}
    save_checkpoint(tmp_path, "old", ckpt.model_state, ckpt.optimizer_state, meta)
    assert "inputs" not in load_checkpoint(tmp_path / "old.safetensors").meta
    old, new = load_run(tmp_path / "old.safetensors"), load_run(trained)
    assert old.preprocessing == new.preprocessing
    assert old.class_names == new.class_names and old.input_shape == new.input_shape
