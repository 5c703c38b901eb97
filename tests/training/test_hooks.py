"""The loop's seams: the hook moments and their state, the trainer options declared once (and
shared with the pre-data checks), and the layer capability flags behind the fit checks."""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from convtrain.app import preflight
from convtrain.app.schema import TrainerConfig
from convtrain.errors import ConfigError, InternalError
from convtrain.nn.base import Layer
from convtrain.training.fit_checks import output_layer_hint, resolve_drop_last
from convtrain.training.hooks import Hook
from convtrain.training.options import TRAINER_DEFAULTS, TrainerOptions, check_trainer_options
from convtrain.training.trainer import TrainingDiverged
from convtrain.visuals.run_logger import VisualLogger
from tests.training.test_trainer import SoftmaxRegression, blobs, make_trainer

REPO = Path(__file__).resolve().parents[2]


class Recorder(Hook):
    """Writes down every moment with what the state says at that moment."""

    def __init__(self):
        self.calls = []

    def on_fit_start(self, state):
        self.calls.append(("fit_start", state.start_epoch, state.global_step))

    def on_epoch_start(self, state):
        self.calls.append(("epoch_start", state.epoch, state.lr))

    def on_train_batch_end(self, state):
        self.calls.append(("batch", state.global_step, state.running.count, state.batch_loss))

    def on_epoch_end(self, state):
        on_disk = json.loads((state.run_dir / "metrics.json").read_text())
        self.calls.append(("epoch_end", state.step, dict(state.metrics), on_disk))

    def on_fit_end(self, state, error):
        self.calls.append(("fit_end", error))


def test_hooks_see_every_moment_in_order_with_the_state(tmp_path):
    recorder = Recorder()
    metrics = make_trainer(tmp_path, blobs(), max_epochs=2, hooks=[recorder]).fit()
    kinds = [c[0] for c in recorder.calls]
    # 96 samples / 16 per batch = 6 batches per epoch
    assert kinds == ["fit_start"] + (["epoch_start"] + ["batch"] * 6 + ["epoch_end"]) * 2 \
        + ["fit_end"]
    assert recorder.calls[0] == ("fit_start", 0, 0)
    batches = [c for c in recorder.calls if c[0] == "batch"]
    assert [c[1] for c in batches] == list(range(1, 13))  # global step after each update
    assert [c[2] for c in batches[:6]] == [16, 32, 48, 64, 80, 96]  # running count per epoch
    ends = [c for c in recorder.calls if c[0] == "epoch_end"]
    assert [c[1] for c in ends] == [1, 2]
    # user hooks run after the built-in ones: metrics.json already holds the epoch
    for _, step, state_metrics, on_disk in ends:
        assert state_metrics["epochs_completed"] == step == on_disk["epochs_completed"]
        assert on_disk["train_loss"] == state_metrics["train_loss"]
    assert ends[-1][2] == metrics
    assert recorder.calls[-1] == ("fit_end", None)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_hooks_are_told_why_training_stopped(tmp_path):
    recorder = Recorder()
    with pytest.raises(TrainingDiverged) as info:
        make_trainer(tmp_path, blobs(), opt={"name": "sgd", "lr": 1e38},
                     hooks=[recorder]).fit()
    assert recorder.calls[-1] == ("fit_end", info.value)


class FailsAtEnd(Hook):
    def on_fit_end(self, state, error):
        raise OSError(28, "No space left on device")


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_hook_failing_at_the_end_neither_hides_the_error_nor_skips_the_others(tmp_path,
                                                                                  caplog):
    recorder = Recorder()
    with caplog.at_level(logging.ERROR, logger="convtrain"):
        with pytest.raises(TrainingDiverged) as info:
            make_trainer(tmp_path, blobs(), opt={"name": "sgd", "lr": 1e38},
                         hooks=[FailsAtEnd(), recorder]).fit()
    assert recorder.calls[-1] == ("fit_end", info.value)
    assert "FailsAtEnd could not finish: [Errno 28] No space left on device" in caplog.text
    # after a clean run the hook's failure is the error
    recorder = Recorder()
    with pytest.raises(OSError, match="No space left"):
        make_trainer(tmp_path / "clean", blobs(), max_epochs=1,
                     hooks=[FailsAtEnd(), recorder]).fit()
    assert recorder.calls[-1] == ("fit_end", None)


def test_a_hook_used_out_of_order_is_a_bug(tmp_path):
    logger = VisualLogger(None, hparams={})
    with pytest.raises(InternalError, match="on_epoch_end called before on_fit_start"):
        logger.on_epoch_end(SimpleNamespace())


# --- trainer options: one declaration ----------------------------------------------------
BAD = [
    ({"batch_size": 0}, r"^trainer\.batch_size: expected a positive integer, got 0$"),
    ({"max_epochs": 2.0}, r"^trainer\.max_epochs: expected a positive integer, got 2\.0 "
                          r"\(write 2, not 2\.0\)$"),
    ({"eval_batch_size": -4}, r"^trainer\.eval_batch_size: expected a positive integer"),
    ({"monitor": "test_accuracy"}, r"^trainer\.monitor: expected one of val_accuracy, "
                                   r"val_loss, train_accuracy, train_loss, got 'test_accuracy'"),
    ({"progress": "sometimes"}, r"^trainer\.progress: expected auto, true or false"),
    ({"log_every_n_steps": -1}, r"^trainer\.log_every_n_steps: expected an integer >= 0 "
                                r"\(0 = off\), got -1$"),
    ({"checkpoint": "yes"}, r"^trainer\.checkpoint: expected true or false, got 'yes'$"),
    ({"resume": 3}, r"^trainer\.resume: expected the path of a checkpoint"),
    ({"drop_last": "yes"}, r"^trainer\.drop_last: expected true, false or null \(auto\)"),
]


@pytest.mark.parametrize(("setting", "message"), BAD)
def test_trainer_and_preflight_run_the_same_checks(tmp_path, setting, message):
    composed = OmegaConf.merge(OmegaConf.structured(TrainerConfig), {})
    with pytest.raises(ConfigError, match=message):
        preflight.check_trainer({**OmegaConf.to_container(composed), **setting})
    with pytest.raises(ConfigError, match=message):
        make_trainer(tmp_path, blobs(), **setting)


def test_preflight_passes_the_trainer_its_checked_options():
    composed = OmegaConf.structured(TrainerConfig)
    checked = preflight.check_trainer(composed)
    assert checked == {"max_epochs": 30, "batch_size": 32, "eval_batch_size": None,
                       "progress": "auto", "log_every_n_steps": 50, "checkpoint": True,
                       "monitor": "val_accuracy", "resume": None, "drop_last": None}
    with pytest.raises(ConfigError, match=r"^trainer\.max_epoch: unknown key; did you mean "
                                          r"'trainer\.max_epochs'\?"):
        check_trainer_options({"max_epoch": 3})


def test_schema_yaml_and_trainer_defaults_agree():
    assert TrainerConfig is TrainerOptions
    shipped = yaml.safe_load((REPO / "configs" / "trainer" / "default.yaml").read_text())
    defaults = {f.name: getattr(TRAINER_DEFAULTS, f.name)
                for f in dataclasses.fields(TrainerOptions)}
    defaults["monitor"] = defaults["monitor"].value
    assert shipped == defaults


# --- capability flags, not class names -----------------------------------------------------
class Normaliser(Layer):
    """Normalises with batch statistics, under a name that says nothing about it."""

    uses_batch_statistics = True


class Projection(Layer):
    width_key = "features"


def model_of(**layers):
    return SimpleNamespace(layers=layers)


def test_drop_last_policy_follows_uses_batch_statistics():
    norm = Normaliser("norm")
    norm.input_shape = (4, 1, 1)  # one value per channel and sample
    assert resolve_drop_last(model_of(norm=norm), 97, 16, None) is True
    assert resolve_drop_last(model_of(norm=Layer("plain")), 97, 16, None) is False
    norm.input_shape = (4, 2, 2)
    assert resolve_drop_last(model_of(norm=norm), 97, 16, None) is False


def test_output_hint_names_the_last_layer_with_a_width_key():
    model = model_of(first=Projection("first"), last=Projection("last"), act=Layer("act"))
    assert output_layer_hint(model, 10) == "set model.layers.last.features=10"
    assert output_layer_hint(model_of(act=Layer("act")), 10) == \
        "end the model with a dense layer of units=10"


# --- resume into a generator that cannot take a NumPy state ------------------------------
class DeviceLikeGenerator:
    """Like CuPy's generator where it matters here: ``bit_generator.state`` is a method, so a
    NumPy state dict cannot be assigned over it."""

    class _BitGenerator:
        __slots__ = ()

        def state(self):
            return "device state"

    def __init__(self, seed):
        self.bit_generator = self._BitGenerator()
        self._numpy = np.random.default_rng(seed)

    def random(self, shape):
        return self._numpy.random(shape)


def test_resume_into_a_non_numpy_rng_warns_instead_of_breaking_it(tmp_path, caplog):
    data = blobs()
    make_trainer(tmp_path / "a", data, SoftmaxRegression(data.input_shape, 3, p_drop=0.2),
                 max_epochs=1).fit()
    model = SoftmaxRegression(data.input_shape, 3, p_drop=0.2)
    model.layers["fc"].rng = DeviceLikeGenerator(5)
    with caplog.at_level(logging.WARNING, logger="convtrain"):
        metrics = make_trainer(tmp_path / "b", data, model, max_epochs=2,
                               resume=str(tmp_path / "a")).fit()
    assert metrics["epochs_completed"] == 2
    assert isinstance(model.layers["fc"].rng, DeviceLikeGenerator)
    assert model.layers["fc"].rng.bit_generator.state() == "device state"
    assert any("layer 'fc' draws with a DeviceLikeGenerator rng, which cannot take the saved "
               "NumPy rng state" in r.getMessage() for r in caplog.records)
