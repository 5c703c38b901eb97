"""The visual hooks as a seam: per-filter weight norms (the visual added through it), automatic
registration of a visual and its logger keys, and the logger settings declared once."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from convtrain.app.schema import LoggerConfig
from convtrain.errors import ConfigError, InternalError
from convtrain.training.checkpoint import load_checkpoint
from convtrain.training.hooks import TrainState
from convtrain.visuals import hook as hook_module
from convtrain.visuals.hook import VISUAL_HOOKS, VisualHook, period_option
from convtrain.visuals.settings import LOGGER_OPTIONS, LoggerSettings, parse_logger_settings
from tests.visuals.test_tb_logging import blobs, read_tb, train, two_conv_model

REPO = Path(__file__).resolve().parents[2]
ONLY_NORMS = {"kernels_every_n_epochs": 0, "feature_maps_every_n_epochs": 0,
              "histograms_every_n_epochs": 0, "classification_every_n_epochs": 0,
              "responses": False, "png": False, "weight_norms_every_n_epochs": 1}


def filter_norms(weight):
    """Independent reference: np.linalg.norm of each filter ``weight[k]``."""
    return [np.linalg.norm(np.asarray(weight[k], np.float64)) for k in range(len(weight))]


# --- weight norms ---------------------------------------------------------------------
def test_weight_norms_are_each_filters_l2_norm_at_the_scheduled_steps(tmp_path):
    data = blobs()
    model = two_conv_model(data, f1=4, f2=3)
    initial = {name: np.array(v) for name, v in model.state_dict().items()}
    train(tmp_path, data, model, max_epochs=3,
          logger={**ONLY_NORMS, "weight_norms_every_n_epochs": 2})
    acc = read_tb(tmp_path)
    tags = {t for t in acc.Tags()["scalars"] if t.startswith("weight_norms/")}
    assert tags == {f"weight_norms/conv1/filter_{k}" for k in range(4)} \
        | {f"weight_norms/conv2/filter_{k}" for k in range(3)}
    final = load_checkpoint(tmp_path / "checkpoints" / "last").model_state
    for layer, filters in (("conv1", 4), ("conv2", 3)):
        for k in range(filters):
            events = acc.Scalars(f"weight_norms/{layer}/filter_{k}")
            # every 2 epochs of 3 -> step 2, the final epoch 3, and the initial weights at 0
            assert [e.step for e in events] == [0, 2, 3]
            for event, weights in ((events[0], initial), (events[-1], final)):
                expected = filter_norms(weights[f"{layer}.weight"])[k]
                assert event.value == pytest.approx(expected, rel=1e-6)  # stored as float32
    # the weights moved, so the norms did: the records are of each step's weights
    first, last = acc.Scalars("weight_norms/conv1/filter_0")[0], \
        acc.Scalars("weight_norms/conv1/filter_0")[-1]
    assert first.value != last.value


def test_weight_norms_off_when_the_period_is_zero_or_tensorboard_is_off(tmp_path):
    data = blobs()
    train(tmp_path / "zero", data, max_epochs=2,
          logger={**ONLY_NORMS, "weight_norms_every_n_epochs": 0})
    assert not [t for t in read_tb(tmp_path / "zero").Tags()["scalars"]
                if t.startswith("weight_norms/")]
    assert "epoch/loss" in read_tb(tmp_path / "zero", "train").Tags()["scalars"]
    train(tmp_path / "off", data, max_epochs=1, logger={"tensorboard": False})
    assert not (tmp_path / "off" / "tensorboard").exists()


def test_weight_norm_tags_sort_by_filter_and_resume_does_not_repeat_step_zero(tmp_path):
    data = blobs()
    train(tmp_path, data, two_conv_model(data, f1=12), max_epochs=1, logger=ONLY_NORMS)
    train(tmp_path, data, two_conv_model(data, f1=12), max_epochs=2, logger=ONLY_NORMS,
          resume=str(tmp_path))
    acc = read_tb(tmp_path)
    conv1 = sorted(t for t in acc.Tags()["scalars"] if t.startswith("weight_norms/conv1/"))
    assert conv1 == [f"weight_norms/conv1/filter_{k:02d}" for k in range(12)]
    # (sorted: two event files of the same second are read in the order of their names)
    assert sorted(e.step for e in acc.Scalars("weight_norms/conv1/filter_00")) == [0, 1, 2]


# --- the seam: a visual registers itself and its logger keys ---------------------------
def test_every_visual_module_defines_one_registered_visual():
    modules = {p.stem for p in (REPO / "convtrain" / "visuals" / "hooks").glob("*.py")
               if p.stem != "__init__"}
    assert {cls.__module__.rsplit(".", 1)[1] for cls in VISUAL_HOOKS} == modules
    assert len(VISUAL_HOOKS) == len(modules)


def test_a_visual_defined_anywhere_is_called_by_a_real_run(tmp_path):
    calls = []

    class Recorder(VisualHook):
        def on_epoch_end(self, state: TrainState) -> None:
            calls.append((state.step, state.metrics["epochs_completed"], self.ctx.writer.enabled))

        def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
            calls.append(("end", error))

    try:
        assert VISUAL_HOOKS[-1] is Recorder
        train(tmp_path, blobs(), max_epochs=2)
    finally:
        VISUAL_HOOKS.remove(Recorder)
    assert calls == [(1, 1, True), (2, 2, True), ("end", None)]


def test_a_periodic_visual_without_log_is_a_bug(tmp_path):
    class Broken(VisualHook):
        period = period_option("weight_norms_every_n_epochs", "reuses a key for the test")

    VISUAL_HOOKS.remove(Broken)
    with pytest.raises(InternalError, match="Broken declares a period but does not implement"):
        Broken(hook_module.VisualContext(LoggerSettings(), None, tmp_path, {}, 0)).log(None, 0)


# --- logger settings: declared once ------------------------------------------------------
def test_schema_yaml_and_settings_agree():
    assert LoggerConfig is LoggerSettings
    fields = {f.name: f.default for f in dataclasses.fields(LoggerSettings)}
    declared = {key: option.default for key, option in LOGGER_OPTIONS.items()}
    assert fields == declared
    shipped = yaml.safe_load((REPO / "configs" / "logger" / "tensorboard.yaml").read_text())
    assert shipped == declared  # every key listed for users, with the declared default
    for cls in VISUAL_HOOKS:
        for option in cls.declared_options():
            assert option.key in fields, (cls.__name__, option.key)


def test_new_period_key_is_checked_like_the_others():
    assert parse_logger_settings(None).weight_norms_every_n_epochs == 0  # off by default
    assert parse_logger_settings({"weight_norms_every_n_epochs": 5}) \
        .weight_norms_every_n_epochs == 5
    with pytest.raises(ConfigError, match=r"^logger\.weight_norms_every_n_epochs: expected an "
                                          r"integer >= 0 \(0 = never\), got -1$"):
        parse_logger_settings({"weight_norms_every_n_epochs": -1})
