"""The config schema, the pre-data checks and layer positions, in process (fast).

Configs are composed with Hydra's compose API from the shipped ``configs/``; what the CLI
prints for the same mistakes is covered end to end in test_cli.py.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf

from convtrain.app import preflight
from convtrain.app.cli import config_dir
from convtrain.app.schema import (OPTIMIZER_SCHEMAS, SCHEDULER_SCHEMAS, register_configs,
                                  schema_name)
from convtrain.errors import ConfigError
from convtrain.app.hydra_errors import explain
from convtrain.nn.layer_order import order_layers
from convtrain.nn.model import build_model
from convtrain.optim import OPTIMIZERS, SCHEDULES
from convtrain.app.run import run


def make_cfg(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def composition_error(*overrides: str) -> str:
    with pytest.raises(HydraException) as info:
        make_cfg(*overrides)
    message = explain(info.value)
    assert message is not None, info.value
    return message


def check_error(*overrides: str) -> str:
    """The ConfigError of the pre-data checks (schema keys, registries, ranges)."""
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as info:
        plan = preflight.check(cfg)
        preflight.build(cfg, plan, plan.input_shape)
    return str(info.value)


# --- schema ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("registry", "schemas"), [(OPTIMIZERS, OPTIMIZER_SCHEMAS),
                                                   (SCHEDULES, SCHEDULER_SCHEMAS)])
def test_group_schemas_follow_the_declared_settings(registry, schemas):
    assert set(schemas) == set(registry.names())
    for name, schema in schemas.items():
        declared = registry.get(name).defaults()
        fields = [f.name for f in dataclasses.fields(schema)]
        assert fields == ["name", *declared], name  # the order messages list them in
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        assert defaults["name"] == name
        for key, value in declared.items():
            expected = list(value) if isinstance(value, tuple) else value
            assert defaults[key] == expected, (name, key)


@pytest.mark.parametrize("group", ["optimizer", "scheduler"])
def test_every_choice_has_a_yaml_that_uses_its_schema(group):
    register_configs()
    schemas = {"optimizer": OPTIMIZER_SCHEMAS, "scheduler": SCHEDULER_SCHEMAS}[group]
    repo = ConfigStore.instance().repo
    # the schemas live at the top level: the group holds only the user's choices
    assert not any(str(option).startswith("schema") for option in repo.get(group, {}))
    assert sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml")) == sorted(schemas)
    for name in schemas:
        assert f"{schema_name(group, name)}.yaml" in repo
        cfg = make_cfg(f"{group}={name}")
        assert OmegaConf.get_type(cfg[group]) is schemas[name]


@pytest.mark.parametrize("group", ["optimizer", "scheduler"])
def test_the_yaml_files_set_only_what_differs_from_a_default(group):
    registry = {"optimizer": OPTIMIZERS, "scheduler": SCHEDULES}[group]
    for path in (Path(config_dir()) / group).glob("*.yaml"):
        declared = registry.get(path.stem).defaults()
        own = {k: v for k, v in OmegaConf.to_container(OmegaConf.load(path)).items()
               if k != "defaults"}
        assert set(own) <= set(declared), path  # `name` comes from the schema
        for key, value in own.items():
            default = list(declared[key]) if isinstance(declared[key], tuple) else declared[key]
            assert value != default, f"{path.name} restates the default {key}={value!r}"


@pytest.mark.parametrize(("override", "expected"), [
    ("optimizer.lrr=1", "optimizer.lrr: unknown key; did you mean 'optimizer.lr'?"),
    ("trainer.max_epoch=3", "trainer.max_epoch: unknown key; did you mean 'trainer.max_epochs'?"),
    ("optimizr.lr=1", "optimizr: unknown key; did you mean 'optimizer'?"),
    ("trainer.max_epochs=abc",
     "trainer.max_epochs: Value 'abc' of type 'str' could not be converted to Integer"),
    ("backend.name=tpu", "backend.name: Invalid value 'tpu', expected one of [numpy, cupy]"),
    ("trainer.monitor=val_acc", "trainer.monitor: Invalid value 'val_acc'"),
    ("optimizer=adamm", "optimizer=adamm: no option 'adamm' in config group 'optimizer' "
                        "(options: adam, adamw, rmsprop, sgd); did you mean 'adam'?"),
    ("model.layers.conv1.dilation=2", "model.layers.conv1.dilation: not set in this model's "
     "config, but 'conv2d' layers accept it: add it with +model.layers.conv1.dilation=2"),
    ("model.layers.conv1.filtrs=3", "model.layers.conv1.filtrs: unknown key for layer type "
                                    "'conv2d'; did you mean 'model.layers.conv1.filters'?"),
    ("model.layers.dorp1.p=0.1", "model.layers.dorp1: no layer 'dorp1' in this model; did you "
                                 "mean 'model.layers.drop1'?"),
    ("optimizer.nesterov=maybe", "optimizer.nesterov: Value 'maybe' is not a valid bool"),
    ("+experiment=digit_cnn", "experiment=digit_cnn: no option 'digit_cnn' in config group "
                              "'experiment'"),
    ("model.layers.drop2={type:dropout", "cannot parse override: no viable alternative"),
])
def test_composition_errors_name_the_key_and_the_closest_valid_one(override, expected):
    assert composition_error(override).startswith(expected)


def test_optimizer_schema_follows_the_chosen_optimizer():
    # momentum is an SGD key: with adam it is unknown at composition time
    assert composition_error("optimizer=adam", "optimizer.momentum=0.9").startswith(
        "optimizer.momentum: unknown key")
    cfg = make_cfg("optimizer=adam", "optimizer.betas=[0.8,0.9]")
    assert list(cfg.optimizer.betas) == [0.8, 0.9]


# --- checks before data (values, and keys that `+` got past the schema) ------------------
@pytest.mark.parametrize(("overrides", "expected"), [
    (["model.layers.drop1.p=1.5"], "model.layers.drop1.p: must be in [0, 1), got 1.5"),
    (["model.layers.conv1.stride=0"], "model.layers.conv1.stride: must be >= 1, got 0"),
    (["optimizer.lr=-1"], "optimizer.lr: must be > 0, got -1.0"),
    (["trainer.batch_size=0"], "trainer.batch_size: expected a positive integer, got 0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs: expected a positive integer, got 0"),
    (["data.val_fraction=1.5"], "data.val_fraction: expected a number in [0, 1)"),
    (["seed=-1"], "seed: expected a non-negative integer, got -1"),
    (["+trainer.max_epoch=3"], "trainer.max_epoch: unknown key; did you mean 'trainer.max_epochs'?"),
    (["+optimizer.lrr=0.1"], "optimizer.lrr: unknown key; did you mean 'optimizer.lr'?"),
    (["+model.ini=he_normal"], "model.ini: unknown key; did you mean 'model.init'?"),
    (["+optimzer=adam"], "optimzer: unknown key; did you mean 'optimizer'?"),
    (["+data.subsett=10"], "data.subsett: unknown key; did you mean 'data.subset'?"),
    (["+model.layers.conv1.filtrs=3"], "model.layers.conv1.filtrs: unknown key for layer type "
                                       "'conv2d'; did you mean 'model.layers.conv1.filters'?"),
    (["model.layers.conv1.type=conv"], "model.layers.conv1.type: Unknown layer type 'conv'"),
    (["+model.layers.x={p:0.5}"], "model.layers.x.type: missing"),
    (["+model.layers.drop2={type:dropout,p:0.5,after:fc9}"],
     "model.layers.drop2.after: unknown layer 'fc9'"),
    (["optimizer.momentum=1.0"], "optimizer.momentum: must be < 1"),
    (["scheduler=step", "scheduler.gamma=-1"], "scheduler.gamma"),
    (["data.name=nope"], "data.name: Unknown dataset 'nope'"),
    (["model.layers.conv1.kernel_size=11", "model.layers.conv1.padding=0"],
     "model.layers.conv1.kernel_size: kernel 11x11"),
])
def test_checks_before_data_name_the_full_key(overrides, expected):
    assert check_error(*overrides).startswith(expected)


def test_mistakes_fail_before_any_data_is_read(monkeypatch, tmp_path):
    import convtrain.data

    def no_loading(*args, **kwargs):
        raise AssertionError("data must not be loaded")

    monkeypatch.setattr(convtrain.data, "load_dataset", no_loading)
    # fashion_mnist from a directory without the files: the layer mistake is reported, not the data
    cfg = make_cfg("data=fashion_mnist", f"data.root={tmp_path}", "model.layers.drop1.p=1.5")
    with pytest.raises(ConfigError, match=r"model\.layers\.drop1\.p"):
        run(cfg, run_dir=tmp_path / "run")
    # the summary of a built-in dataset needs no data files at all
    run(make_cfg("data=fashion_mnist", f"data.root={tmp_path}", "task=summary"),
        run_dir=tmp_path / "run")


def test_summary_of_a_dataset_with_unknown_shape_loads_it(monkeypatch, tmp_path, capsys):
    from convtrain.data.digits import read_digits

    monkeypatch.delattr(read_digits, "input_shape")
    run(make_cfg("task=summary"), run_dir=tmp_path)
    assert "Input shape:          (1, 8, 8)" in capsys.readouterr().out


# --- layer positions -------------------------------------------------------------------------
LAYERS = {"conv1": {"type": "conv2d"}, "relu1": {"type": "relu"}, "flat": {"type": "flatten"},
          "fc1": {"type": "dense"}, "fc2": {"type": "dense"}}


def test_after_and_before_place_new_layers_and_are_removed():
    layers = {**LAYERS,
              "drop1": {"type": "dropout", "p": 0.5, "after": "fc1"},
              "bn": {"type": "batchnorm2d", "before": "relu1"},
              "drop2": {"type": "dropout", "after": "fc1"}}
    ordered = order_layers(layers)
    assert list(ordered) == ["conv1", "bn", "relu1", "flat", "fc1", "drop1", "drop2", "fc2"]
    assert ordered["drop1"] == {"type": "dropout", "p": 0.5}
    assert all("after" not in s and "before" not in s for s in ordered.values())


def test_anchors_can_be_positioned_layers_and_disabled_layers():
    layers = {**LAYERS, "b": {"type": "relu", "after": "a"}, "a": {"type": "relu", "after": "fc1"},
              "relu1": None, "c": {"type": "relu", "before": "relu1"}}
    assert list(order_layers(layers)) == ["conv1", "c", "relu1", "flat", "fc1", "a", "b", "fc2"]


@pytest.mark.parametrize(("extra", "expected"), [
    ({"d": {"type": "dropout", "after": "fc_1"}},
     "model.layers.d.after: unknown layer 'fc_1' (layers: conv1, relu1, flat, fc1, fc2, d); "
     "did you mean 'fc1'?"),
    ({"d": {"type": "dropout", "after": "fc1", "before": "fc2"}}, "model.layers.d: give either"),
    ({"d": {"type": "dropout", "after": "d"}}, "model.layers.d.after: a layer cannot be placed"),
    ({"d": {"type": "dropout", "after": 3}}, "model.layers.d.after: expected a layer name"),
    ({"a": {"type": "relu", "after": "b"}, "b": {"type": "relu", "after": "a"}},
     "model.layers: the positions form a cycle"),
])
def test_bad_positions(extra, expected):
    with pytest.raises(ConfigError) as info:
        order_layers({**LAYERS, **extra})
    assert str(info.value).startswith(expected)


def test_insert_remove_and_override_from_overrides():
    cfg = make_cfg("+model.layers.drop2={type:dropout,p:0.5,after:fc1}", "~model.layers.relu2",
                   "model.layers.drop1=null", "model.layers.conv2.filters=8")
    model = build_model(cfg.model, (1, 8, 8))
    assert list(model.layers) == ["conv1", "relu1", "pool1", "conv2", "pool2", "flat", "fc1",
                                  "drop2", "relu3", "fc2"]
    assert model.layers["conv2"].params["weight"].shape[0] == 8
    assert model.layers["drop2"].p == 0.5


def test_the_hydra_error_hook_exists():
    # convtrain.app.hydra_errors wraps this private name (hydra-core is pinned to 1.3.x)
    from hydra._internal import utils

    assert callable(utils.run_and_report)


# --- engine settings ---------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("engine.num_threads=0", "engine.num_threads: expected a positive integer, got 0"),
    ("engine.max_workspace_mb=-5", "engine.max_workspace_mb: expected a positive number of MiB or null"),
])
def test_bad_engine_settings_name_the_key(override, message):
    assert message in check_error(override)


def test_engine_switches_must_be_booleans():
    assert "engine.pin_threads: Value 'sometimes' is not a valid bool" in composition_error(
        "engine.pin_threads=sometimes")


def test_engine_settings_are_applied_for_the_run():
    from convtrain import runtime

    before = (runtime.get_max_workspace_mb(), runtime.get_num_threads())
    try:
        plan = preflight.check(make_cfg("engine.max_workspace_mb=32", "engine.num_threads=1",
                                        "engine.keep_freed_memory=false",
                                        "engine.pin_threads=false"))
        preflight.apply_engine_settings(plan.engine)
        assert runtime.get_max_workspace_mb() == 32.0 and runtime.get_num_threads() == 1
        assert runtime.get_pin_threads() is False
        plan = preflight.check(make_cfg("engine.max_workspace_mb=null"))
        preflight.apply_engine_settings(plan.engine)
        assert runtime.get_max_workspace_mb() is None and runtime.get_num_threads() == 2
        assert runtime.get_pin_threads() is True
    finally:
        runtime.set_max_workspace_mb(before[0])
        runtime.set_num_threads(before[1])
        runtime.set_pin_threads(True)


def test_layer_appended_after_the_logits_is_warned_about(caplog):
    cfg = make_cfg("+model.layers.x={type: relu}")
    plan = preflight.check(cfg)
    with caplog.at_level("WARNING", logger="convtrain"):
        preflight.build(cfg, plan, plan.input_shape)
    assert "x come(s) after the output layer 'fc2'" in caplog.text
    caplog.clear()
    cfg = make_cfg("+model.layers.x={type: relu, after: fc1}")
    with caplog.at_level("WARNING", logger="convtrain"):
        preflight.build(cfg, preflight.check(cfg), plan.input_shape)
    assert "output layer" not in caplog.text


# The values a user gets for each choice, as the shipped YAML files stated them before the
# defaults were declared once in convtrain/optim/ (PyTorch's defaults, plus the project's own
# SGD settings and schedule steps): whatever moves behind them, these must not change.
COMPOSED_CHOICES = {
    ("optimizer", "sgd"): {"name": "sgd", "lr": 0.05, "momentum": 0.9, "dampening": 0.0,
                           "nesterov": False, "weight_decay": 0.0005},
    ("optimizer", "adam"): {"name": "adam", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08,
                            "weight_decay": 0.0},
    ("optimizer", "adamw"): {"name": "adamw", "lr": 0.001, "betas": [0.9, 0.999], "eps": 1e-08,
                             "weight_decay": 0.01},
    ("optimizer", "rmsprop"): {"name": "rmsprop", "lr": 0.001, "alpha": 0.99, "eps": 1e-08,
                               "momentum": 0.0, "weight_decay": 0.0},
    ("scheduler", "constant"): {"name": "constant", "warmup_epochs": 0},
    ("scheduler", "cosine"): {"name": "cosine", "t_max": None, "eta_min": 0.0,
                              "warmup_epochs": 0},
    ("scheduler", "step"): {"name": "step", "step_size": 10, "gamma": 0.1, "warmup_epochs": 0},
    ("scheduler", "multistep"): {"name": "multistep", "milestones": [10, 20], "gamma": 0.1,
                                 "warmup_epochs": 0},
    ("scheduler", "exponential"): {"name": "exponential", "gamma": 0.95, "warmup_epochs": 0},
}


@pytest.mark.parametrize("group, choice", sorted(COMPOSED_CHOICES))
def test_each_choice_composes_to_the_values_users_had(group, choice):
    composed = OmegaConf.to_container(make_cfg(f"{group}={choice}")[group])
    assert composed == COMPOSED_CHOICES[group, choice]
    assert list(composed) == list(COMPOSED_CHOICES[group, choice])  # --cfg job's key order


def test_every_choice_has_its_expected_values():
    shipped = {(group, path.stem) for group in ("optimizer", "scheduler")
               for path in (Path(config_dir()) / group).glob("*.yaml")}
    assert shipped == set(COMPOSED_CHOICES)
