"""Layer options declared once: defaults from the signature, one checker for YAML and Python,
one place for accepted keys and the wording of a missing/unknown type, a generic from_config,
capability flags, and InternalError for misuse."""
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from convtrain.errors import ConfigError, InternalError
from convtrain.nn import (LAYERS, AvgPool2d, BatchNorm2d, Conv2d, Dense, Dropout, Flatten,
                          Layer, LeakyReLU, MaxPool2d, ReLU, build_layer, register_layer)
from convtrain.nn.base import MACHINERY_ARGUMENTS
from convtrain.nn.layer_types import accepted_keys, check_layer_keys, unknown_key
from convtrain.nn.model import build_model
from convtrain.nn.options import Option

DEFAULTS = {"init": "he_normal", "rng": np.random.default_rng(0), "dtype": np.float32}
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("type_name", LAYERS.names())
def test_every_constructor_argument_is_a_declared_option_with_the_signature_default(type_name):
    layer_cls = LAYERS.get(type_name)
    parameters = inspect.signature(layer_cls).parameters
    declared = {o.arg: o for o in layer_cls.options if o.constructor}
    assert set(declared) == set(parameters) - set(MACHINERY_ARGUMENTS)
    for arg, option in declared.items():
        assert option.default is parameters[arg].default, (type_name, arg)
        assert option.meaning


def test_public_signatures_are_unchanged():
    assert str(inspect.signature(Conv2d)) == (
        "(in_channels: 'int', out_channels: 'int', kernel_size: 'Any', stride: 'Any' = 1, "
        "padding: 'Any' = 0, dilation: 'Any' = 1, groups: 'int' = 1, bias: 'bool' = True, "
        "init: 'str' = 'he_normal', name: 'str | None' = None, "
        "rng: 'np.random.Generator | None' = None, dtype: 'Any' = <class 'numpy.float32'>, *, "
        "where: 'str | None' = None, max_workspace_mb: 'float | None' = None)")
    assert list(inspect.signature(Dense).parameters) == [
        "in_features", "out_features", "bias", "init", "name", "rng", "dtype", "where"]
    assert list(inspect.signature(BatchNorm2d).parameters) == [
        "num_features", "momentum", "eps", "name", "dtype", "where"]
    assert list(inspect.signature(AvgPool2d).parameters) == [
        "kernel_size", "stride", "padding", "count_include_pad", "name", "where"]
    assert list(inspect.signature(MaxPool2d).parameters) == [
        "kernel_size", "stride", "padding", "name", "where"]
    assert list(inspect.signature(Dropout).parameters) == ["p", "name", "seed", "where"]
    assert list(inspect.signature(LeakyReLU).parameters) == ["negative_slope", "name", "where"]
    assert list(inspect.signature(Flatten).parameters) == ["name", "where"]


def test_options_and_signature_must_agree_when_the_class_is_defined():
    with pytest.raises(TypeError, match=r"option 'factor' names constructor argument 'factor'"):
        class Missing(Layer):  # noqa: F841
            options = (Option("factor", "number", "scale"),)

    with pytest.raises(TypeError, match=r"constructor arguments \['factor'\] are not declared"):
        class Undeclared(Layer):  # noqa: F841
            def __init__(self, factor=2.0, name=None, *, where=None):
                super().__init__(name, where)


@pytest.mark.parametrize("construct, yaml, message", [
    (lambda: Dense(4, 0), {"type": "dense", "units": 0},
     ("argument 'out_features': must be >= 1, got 0", ".units: must be >= 1, got 0")),
    (lambda: BatchNorm2d(3, eps=0), {"type": "batchnorm2d", "eps": 0},
     ("argument 'eps': must be > 0, got 0.0", ".eps: must be > 0, got 0.0")),
    (lambda: MaxPool2d(2, stride=[1, 2, 3]), {"type": "maxpool2d", "kernel_size": 2,
                                              "stride": [1, 2, 3]},
     ("argument 'stride': expected an integer or a list", ".stride: expected an integer or a list")),
    (lambda: LeakyReLU("x"), {"type": "leaky_relu", "negative_slope": "x"},
     ("argument 'negative_slope': expected a number, got 'x' (str)",
      ".negative_slope: expected a number, got 'x' (str)")),
])
def test_one_checker_names_the_argument_or_the_config_key(construct, yaml, message):
    direct, from_yaml = message
    with pytest.raises(ConfigError) as info:
        construct()
    assert str(info.value).startswith("layer '") and direct in str(info.value)
    shape = (6,) if yaml["type"] == "dense" else (3, 6, 6)
    with pytest.raises(ConfigError) as info:
        build_layer("x1", yaml, shape, DEFAULTS)
    assert str(info.value) == "model.layers.x1" + from_yaml + str(info.value).split(from_yaml)[1]


def test_accepted_keys_and_messages_come_from_one_place():
    assert accepted_keys(Dense) == ("type", "after", "before", "inputs", "enabled", "units",
                                    "bias", "init", "weight_decay_mult", "trainable")
    assert accepted_keys(ReLU) == ("type", "after", "before", "inputs", "enabled")
    expected = ("model.layers.fc.unit: unknown key for layer type 'dense'; did you mean "
                "'model.layers.fc.units'? (valid keys: bias, init, trainable, units, "
                "weight_decay_mult)")
    assert unknown_key("model.layers.fc", Dense, "unit") == expected
    with pytest.raises(ConfigError) as pre_data:
        check_layer_keys("model.layers.fc", {"type": "dense", "unit": 3, "after": "x"})
    with pytest.raises(ConfigError) as building:
        build_layer("fc", {"type": "dense", "unit": 3}, (5,), DEFAULTS)
    assert str(pre_data.value) == str(building.value) == expected
    # the placement keys are suggested too in a raw mapping
    with pytest.raises(ConfigError, match=r"did you mean 'model\.layers\.d\.after'\?"):
        check_layer_keys("model.layers.d", {"type": "dropout", "aftr": "fc1"})
    for spec, wording in [({"p": 0.5}, r"^model\.layers\.d\.type: missing \(known types: "),
                          ({"type": "drop"}, r"^model\.layers\.d\.type: Unknown layer type"),
                          (3, r"^model\.layers\.d: expected a mapping like")]:
        with pytest.raises(ConfigError, match=wording):
            check_layer_keys("model.layers.d", spec)
        with pytest.raises(ConfigError, match=wording):
            build_layer("d", spec, (5,), DEFAULTS)


@pytest.fixture
def scale_layer():
    """A layer defined the way a new layer file defines one, registered for one test."""

    @register_layer("test_scale")
    class Scale(Layer):
        options = (Option("factor", "number", "multiplier", low=0.0, low_open=True,
                          expected="> 0"),
                   Option("init", "name", "an initializer name", model_default="init"))
        commutes_with_max_pool = True  # x -> factor·x with factor > 0 is increasing

        def __init__(self, factor=2.0, init="ones", name=None, *, where=None):
            super().__init__(name, where)
            self.set_options(locals())

        def forward(self, x, training=True):
            return x * self.factor

        def backward(self, dy):
            return dy * self.factor

    yield Scale
    del LAYERS._entries["test_scale"]


def test_a_new_layer_needs_only_its_class(scale_layer):
    layer = build_layer("s", {"type": "test_scale"}, (2, 4, 4), {"init": "zeros"})
    assert isinstance(layer, scale_layer) and layer.factor == 2.0 and layer.init == "zeros"
    assert layer.input_shape == (2, 4, 4) and layer.where == "model.layers.s"
    assert build_layer("s", {"type": "test_scale", "factor": 3}, (5,), {}).factor == 3.0
    assert build_layer("s", {"type": "test_scale"}, (5,), {}).init == "ones"
    with pytest.raises(ConfigError, match=r"^model\.layers\.s\.factor: must be > 0, got 0\.0$"):
        build_layer("s", {"type": "test_scale", "factor": 0}, (5,), {})
    with pytest.raises(ConfigError, match=r"^model\.layers\.s\.factr: .*did you mean "
                                          r"'model\.layers\.s\.factor'\? \(valid keys: factor, init\)$"):
        build_layer("s", {"type": "test_scale", "factr": 1}, (5,), {})
    # the capability flag, not the class, lets the model run it after a max-pooling layer
    model = build_model({"layers": {"s": {"type": "test_scale"},
                                    "p": {"type": "maxpool2d", "kernel_size": 2},
                                    "r": {"type": "leaky_relu"},
                                    "q": {"type": "maxpool2d", "kernel_size": 2}}}, (1, 8, 8))
    assert [l.name for l in model._run_order()] == ["p", "s", "r", "q"]


def test_misuse_of_the_python_api_is_an_internal_error():
    for layer, dy in [(Conv2d(1, 2, 3), np.zeros((1, 2, 2, 2), np.float32)),
                      (Dense(3, 2), np.zeros((1, 2), np.float32)),
                      (MaxPool2d(2), np.zeros((1, 1, 2, 2), np.float32)),
                      (AvgPool2d(2), np.zeros((1, 1, 2, 2), np.float32)),
                      (ReLU(), np.zeros((1, 3), np.float32)),
                      (LeakyReLU(), np.zeros((1, 3), np.float32)),
                      (BatchNorm2d(2), np.zeros((1, 2, 2, 2), np.float32)),
                      (Flatten(), np.zeros((1, 3), np.float32))]:
        with pytest.raises(InternalError, match=re.escape(f"{layer.where}: backward() called "
                                                          f"before forward()")):
            layer.backward(dy)
    with pytest.raises(InternalError, match=r"layer 'conv2d': output_shape\(\) needs an input "
                                            r"shape until the layer is built"):
        Conv2d(1, 2, 3).output_shape()
    with pytest.raises(InternalError, match=r"ReLU draws no random numbers"):
        ReLU().seed_rng(0)


def test_the_readme_layer_table_lists_every_type_and_key():
    text = README.read_text()
    table = text[text.index("| `type` |"):text.index("Layers with parameters also take")]
    for type_name in LAYERS.names():
        row = next((line for line in table.splitlines()
                    if line.startswith("|") and f"`{type_name}`" in line.split("|")[1]), None)
        assert row is not None, f"README Models table misses `{type_name}`"
        for option in LAYERS.get(type_name).options:
            if option.config and option.constructor:
                assert f"`{option.key}`" in row, (type_name, option.key)
