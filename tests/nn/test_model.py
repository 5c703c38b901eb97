"""Model: end-to-end gradients, build-time validation, summary numbers computed here from the
textbook formulas, state_dict round trips, seeding, and an optional PyTorch cross-check."""
from collections import OrderedDict

import numpy as np
import pytest
from omegaconf import OmegaConf

from convtrain.ops.losses import softmax_cross_entropy
from convtrain.errors import ConfigError
from convtrain.nn import Conv2d, Dropout, ReLU
from convtrain.nn.model import Model, build_model
from tests.gradcheck import check_gradients

SMALL = {
    "name": "small",
    "layers": {
        "conv1": {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
        "bn1": {"type": "batchnorm2d"},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2},
        "flat": {"type": "flatten"},
        "drop": {"type": "dropout", "p": 0.3},
        "fc": {"type": "dense", "units": 4},
    },
}


def lenet_config(**overrides):
    layers = {
        "conv1": {"type": "conv2d", "filters": 6, "kernel_size": 5},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2, "stride": 2},
        "conv2": {"type": "conv2d", "filters": 16, "kernel_size": 5},
        "relu2": {"type": "relu"},
        "pool2": {"type": "maxpool2d", "kernel_size": 2, "stride": 2},
        "flat": {"type": "flatten"},
        "fc1": {"type": "dense", "units": 120},
        "relu3": {"type": "relu"},
        "fc2": {"type": "dense", "units": 84},
        "fc3": {"type": "dense", "units": 10},
    }
    layers.update(overrides)
    return {"name": "lenet", "init": "he_normal", "layers": layers}


# --- end-to-end gradient -------------------------------------------------------------------------
def test_whole_model_gradient_matches_finite_differences_of_the_loss():
    model = build_model(SMALL, (2, 6, 6), seed=3, dtype=np.float64)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 3, 1])
    dropout = model.layers["drop"]

    def loss():
        dropout.seed_rng(11)  # the same mask on every evaluation
        return softmax_cross_entropy(model.forward(x, training=True), labels)[0]

    loss()
    dropout.seed_rng(11)
    _, dlogits = softmax_cross_entropy(model.forward(x, training=True), labels)
    dx = model.backward(dlogits)
    assert dx.shape == x.shape
    inputs = {"x": x}
    analytic = {"x": dx}
    for qualified, layer, key in model.named_parameters():
        inputs[qualified] = layer.params[key]
        analytic[qualified] = np.array(layer.grads[key])
    assert len(analytic) == 1 + 6  # conv w/b, bn w/b, dense w/b
    # BatchNorm subtracts the per-channel mean, so the conv bias before it has no effect on
    # the loss: its true gradient is 0 (a relative error check of 0 vs 1e-17 is meaningless).
    np.testing.assert_allclose(analytic.pop("conv1.bias"), 0, atol=1e-12)
    check_gradients(loss, inputs, analytic, tol=1e-6)


# --- summary -----------------------------------------------------------------------------------
def conv_out(size, k, s=1, p=0):
    return (size + 2 * p - k) // s + 1


def test_lenet_summary_matches_the_formulas():
    model = build_model(lenet_config(), (1, 32, 32))
    rows = {row["name"]: row for row in model.summary_rows()}
    s1 = conv_out(32, 5)
    s2 = conv_out(s1, 2, 2)
    s3 = conv_out(s2, 5)
    s4 = conv_out(s3, 2, 2)
    flat = 16 * s4 * s4
    expected_shapes = {"conv1": (6, s1, s1), "pool1": (6, s2, s2), "conv2": (16, s3, s3),
                       "pool2": (16, s4, s4), "flat": (flat,), "fc1": (120,), "fc3": (10,)}
    for name, shape in expected_shapes.items():
        assert rows[name]["output_shape"] == shape, name
    params = {"conv1": 6 * (1 * 5 * 5 + 1), "conv2": 16 * (6 * 5 * 5 + 1),
              "fc1": flat * 120 + 120, "fc2": 120 * 84 + 84, "fc3": 84 * 10 + 10}
    for name, count in params.items():
        assert rows[name]["params"] == count, name
    assert rows["relu1"]["params"] == 0 and rows["pool1"]["params"] == 0
    total = sum(params.values())
    assert model.num_params() == total == 61706  # the classic LeNet-5 (ReLU, 32x32) count
    flops = {"conv1": 2 * 6 * s1 * s1 * 25 + 6 * s1 * s1, "relu1": 6 * s1 * s1,
             "pool1": 6 * s2 * s2 * 4, "conv2": 2 * 16 * s3 * s3 * 6 * 25 + 16 * s3 * s3,
             "fc1": 2 * flat * 120 + 120}
    for name, count in flops.items():
        assert rows[name]["flops"] == count, name
    # receptive field: 5, then +1 (pool 2 at jump 1), then +4*2 (conv 5 at jump 2), +1*4
    assert [rows[n]["receptive_field"] for n in ("conv1", "pool1", "conv2", "pool2")] == [
        (5, 5), (6, 6), (14, 14), (16, 16)]
    assert rows["fc1"]["receptive_field"] == (32, 32)
    text = model.summary()
    total_flops = sum(row["flops"] for row in rows.values())
    for fragment in (f"Total params:         {total:,}", f"Trainable params:     {total:,}",
                     f"{total_flops:,}", "(1, 32, 32)", "16x5x5", "14x14"):
        assert fragment in text


def test_frozen_layers_count_as_non_trainable():
    config = lenet_config(conv1={"type": "conv2d", "filters": 6, "kernel_size": 3,
                                 "init": "sobel", "trainable": False})
    model = build_model(config, (1, 28, 28))
    frozen = 6 * (9 + 1)
    assert model.num_params() - model.num_params(trainable_only=True) == frozen
    assert "conv1.weight" not in [n for n, _, _ in model.named_parameters()]
    assert f"Non-trainable params: {frozen:,}" in model.summary()


def nonzero_extent(dx):
    rows = np.flatnonzero(np.abs(dx).sum(axis=1) > 0)
    cols = np.flatnonzero(np.abs(dx).sum(axis=0) > 0)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("layers", [
    {"a": {"type": "conv2d", "filters": 1, "kernel_size": 3},
     "b": {"type": "conv2d", "filters": 1, "kernel_size": 3}},
    {"a": {"type": "conv2d", "filters": 1, "kernel_size": 5}},
    {"a": {"type": "conv2d", "filters": 1, "kernel_size": 3, "stride": 2},
     "p": {"type": "avgpool2d", "kernel_size": 2},
     "b": {"type": "conv2d", "filters": 1, "kernel_size": 3, "dilation": 2}},
])
def test_receptive_field_equals_the_support_of_the_input_gradient(layers):
    """An independent measurement: with all-ones kernels, the input pixels that influence one
    output unit are exactly those with a nonzero gradient."""
    model = build_model({"init": "ones", "layers": layers}, (1, 31, 31), dtype=np.float64)
    x = np.ones((1, 1, 31, 31))
    y = model.forward(x)
    dy = np.zeros_like(y)
    dy[0, 0, y.shape[2] // 2, y.shape[3] // 2] = 1
    dx = model.backward(dy)[0, 0]
    assert model.summary_rows()[-1]["receptive_field"] == nonzero_extent(dx)


def test_two_stacked_3x3_see_as_much_as_one_5x5():
    stacked = build_model({"layers": {"a": {"type": "conv2d", "filters": 2, "kernel_size": 3},
                                      "b": {"type": "conv2d", "filters": 2, "kernel_size": 3}}},
                          (1, 9, 9))
    single = build_model({"layers": {"a": {"type": "conv2d", "filters": 2, "kernel_size": 5}}},
                         (1, 9, 9))
    assert stacked.summary_rows()[-1]["receptive_field"] == (5, 5)
    assert single.summary_rows()[-1]["receptive_field"] == (5, 5)
    last_row = [line for line in stacked.summary().splitlines() if line.startswith("b ")]
    assert last_row[0].endswith("5x5")


# --- build_model validation ----------------------------------------------------------------
def test_unknown_top_level_key_names_model_key():
    with pytest.raises(ConfigError, match=r"^model\.layrs: unknown key; did you mean "
                                          r"'model\.layers'\?"):
        build_model({"layrs": {}}, (1, 8, 8))


def test_empty_or_missing_layers_are_rejected():
    with pytest.raises(ConfigError, match=r"model.layers: no layers"):
        build_model({"layers": {}}, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"model.layers: no layers"):
        build_model({"layers": {"drop": None}}, (1, 8, 8))
    with pytest.raises(ConfigError, match=r"model.layers: expected a mapping"):
        build_model({"init": "he_normal"}, (1, 8, 8))


def test_errors_from_layers_carry_their_config_path():
    config = lenet_config(fc1={"type": "dense", "unit": 120})
    with pytest.raises(ConfigError, match=r"model\.layers\.fc1\.unit: unknown key .*'model\.layers\.fc1\.units'"):
        build_model(config, (1, 32, 32))
    with pytest.raises(ConfigError, match=r"model.layers.conv2.kernel_size: kernel 5x5 .* 2x2 "
                                          r"\(input shape \(6, 2, 2\), padding 0\)"):
        build_model(lenet_config(), (1, 8, 8))
    with pytest.raises(ConfigError, match=r"model.init: Unknown initializer 'xavier'.*did you "
                                          r"mean 'xavier_"):
        build_model({**lenet_config(), "init": "xavier"}, (1, 32, 32))
    with pytest.raises(ConfigError, match=r"input_shape"):
        build_model(lenet_config(), (1, 0, 32))


def test_null_layer_is_skipped_and_leaves_other_weights_unchanged():
    with_drop = build_model(SMALL, (2, 6, 6), seed=5)
    config = {**SMALL, "layers": {**SMALL["layers"], "drop": None}}
    without = build_model(config, (2, 6, 6), seed=5)
    assert "drop" not in without.layers
    for key, value in without.state_dict().items():
        np.testing.assert_array_equal(value, with_drop.state_dict()[key])


def test_global_init_applies_unless_a_layer_overrides_it():
    layers = {"c": {"type": "conv2d", "filters": 2, "kernel_size": 3},
              "z": {"type": "conv2d", "filters": 2, "kernel_size": 3, "init": "ones"}}
    model = build_model({"init": "zeros", "layers": layers}, (1, 6, 6))
    assert not model.layers["c"].params["weight"].any()
    assert (model.layers["z"].params["weight"] == 1).all()


def test_omegaconf_config_and_seeding():
    cfg = OmegaConf.create(SMALL)
    a, b = build_model(cfg, (2, 6, 6), seed=1), build_model(SMALL, (2, 6, 6), seed=1)
    c = build_model(SMALL, (2, 6, 6), seed=2)
    np.testing.assert_array_equal(a.layers["conv1"].params["weight"],
                                  b.layers["conv1"].params["weight"])
    assert not np.array_equal(a.layers["conv1"].params["weight"],
                              c.layers["conv1"].params["weight"])
    x = np.random.default_rng(0).standard_normal((4, 2, 6, 6)).astype(np.float32)
    # dropout masks come from the seed too: identical training-mode outputs
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    assert a.forward(x).dtype == np.float32


def test_model_forward_checks_input_shape_and_casts_dtype():
    model = build_model(SMALL, (2, 6, 6))
    with pytest.raises(ConfigError, match=r"model input: expected a batch of shape "
                                          r"\(N, 2, 6, 6\), got \(4, 3, 6, 6\)"):
        model.forward(np.zeros((4, 3, 6, 6), np.float32))
    assert model.forward(np.zeros((4, 2, 6, 6), np.float64), training=False).dtype == np.float32


def test_model_from_directly_constructed_layers():
    model = Model({"conv": Conv2d(1, 2, 3), "act": ReLU()}, (1, 5, 5))
    assert model.output_shape == (2, 3, 3)
    assert model.layers["conv"].input_shape == (1, 5, 5)
    with pytest.raises(ConfigError, match=r"layer 'conv2d'.*kernel 3x3.*2x2"):
        Model({"conv": Conv2d(1, 2, 3)}, (1, 2, 2))


def test_backend_switch_rejects_unknown_names():
    model = build_model(SMALL, (2, 6, 6))
    assert model.to_backend("numpy") is model
    with pytest.raises(ConfigError, match="backend.name: unknown backend 'tpu' .known backends: numpy, cupy."):
        model.to_backend("tpu")


# --- state_dict ---------------------------------------------------------------------------------
def test_state_dict_round_trip_reproduces_outputs():
    source = build_model(SMALL, (2, 6, 6), seed=1)
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 6)).astype(np.float32)
    source.forward(x, training=True)  # move BatchNorm's running statistics off their defaults
    state = source.state_dict()
    assert list(state) == ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias",
                           "bn1.running_mean", "bn1.running_var", "fc.weight", "fc.bias"]
    assert state["fc.weight"].shape == (4, 3 * 3 * 3)
    state["conv1.weight"][...] = state["conv1.weight"] * 1  # a copy, not a view
    target = build_model(SMALL, (2, 6, 6), seed=2)
    assert not np.allclose(target.forward(x, training=False), source.forward(x, training=False))
    result = target.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(target.forward(x, training=False),
                                  source.forward(x, training=False))


def test_state_dict_returns_copies():
    model = build_model(SMALL, (2, 6, 6))
    state = model.state_dict()
    state["conv1.weight"][...] = 42
    assert not (model.layers["conv1"].params["weight"] == 42).any()


def test_strict_loading_lists_missing_and_unexpected_keys():
    model = build_model(SMALL, (2, 6, 6))
    state = model.state_dict()
    del state["bn1.running_var"]
    state["fc2.weight"] = np.zeros(3)
    with pytest.raises(ConfigError, match=r"missing keys: bn1.running_var; unexpected keys: "
                                          r"fc2.weight"):
        model.load_state_dict(state)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["bn1.running_var"]
    assert result.unexpected_keys == ["fc2.weight"]


def test_shape_mismatch_names_the_key_and_leaves_the_model_unchanged():
    model = build_model(SMALL, (2, 6, 6))
    before = model.state_dict()
    state = {k: v + 1 for k, v in before.items()}
    state["fc.weight"] = np.zeros((27, 4))  # transposed
    with pytest.raises(ConfigError, match=r"'fc.weight' has shape \(27, 4\) in the state dict "
                                          r"but \(4, 27\) in the model"):
        model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


# --- optional PyTorch cross-check -------------------------------------------------------------
def test_state_dict_loads_into_equivalent_torch_model():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    config = {"layers": {
        "conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1, "groups": 2},
        "bn1": {"type": "batchnorm2d"},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2},
        "flat": {"type": "flatten"},
        "fc1": {"type": "dense", "units": 5},
    }}
    model = build_model(config, (2, 6, 6), seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    model.forward(x, training=True)
    reference = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 4, 3, padding=1, groups=2), bn1=nn.BatchNorm2d(4), relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2), flat=nn.Flatten(), fc1=nn.Linear(36, 5))).double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    reference.eval()
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), expected, rtol=1e-10,
                               atol=1e-12)


def test_dropout_layers_get_independent_seeded_streams():
    config = {"layers": {"d1": {"type": "dropout", "p": 0.5}, "d2": {"type": "dropout", "p": 0.5}}}
    model = build_model(config, (1000,), seed=0)
    d1, d2 = model.layers["d1"], model.layers["d2"]
    assert isinstance(d1, Dropout) and d1.seed != d2.seed
    again = build_model(config, (1000,), seed=0)
    assert again.layers["d1"].seed == d1.seed


def test_engine_errors_during_training_name_the_layer():
    # BatchNorm on 1x1 maps cannot estimate a variance from a single sample: the engine knows
    # only "batchnorm2d", the message must say which layer of the config it was.
    model = build_model({"layers": {
        "conv1": {"type": "conv2d", "filters": 2, "kernel_size": 1},
        "bn1": {"type": "batchnorm2d"}, "flat": {"type": "flatten"},
        "fc": {"type": "dense", "units": 3}}}, (1, 1, 1))
    with pytest.raises(ConfigError, match=r"^model\.layers\.bn1: batchnorm2d: training needs more than 1"):
        model.forward(np.ones((1, 1, 1, 1), np.float32), training=True)
    model.forward(np.ones((1, 1, 1, 1), np.float32), training=False)  # eval uses running stats


def test_relu_before_maxpool_runs_after_it_with_identical_results():
    """Model runs a ReLU followed by a MaxPool2d as pool-then-ReLU (they commute): the logits
    and every gradient equal those of the layers applied one by one in config order."""
    import convtrain

    cfg = {"layers": {
        "conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1},
        "relu1": {"type": "relu"},
        "pool1": {"type": "maxpool2d", "kernel_size": 2, "stride": 2},
        "conv2": {"type": "conv2d", "filters": 5, "kernel_size": 3},
        "relu2": {"type": "relu"},
        "pool2": {"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1},
        "flat": {"type": "flatten"},
        "fc": {"type": "dense", "units": 3},
    }}
    model = convtrain.build_model(cfg, (2, 10, 10), seed=3, dtype=np.float64)
    names = list(model.layers)
    assert [type(l).__name__ for l in model._run_order()][:6] == [
        "Conv2d", "MaxPool2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 10, 10))
    x[0] = 0.0  # windows with no positive value (ties at zero)
    logits = model.forward(x)
    dlogits = rng.standard_normal(logits.shape)
    dx = model.backward(dlogits)
    grads = {n: {k: v.copy() for k, v in model.layers[n].grads.items()} for n in names}

    out = x
    for n in names:
        out = model.layers[n].forward(out)
    np.testing.assert_array_equal(out, logits)
    g = dlogits
    for n in reversed(names):
        g = model.layers[n].backward(g)
    np.testing.assert_array_equal(g, dx)
    for n in names:
        for k, v in model.layers[n].grads.items():
            np.testing.assert_array_equal(v, grads[n][k])


def test_layer_outputs_are_the_named_layers_outputs():
    model = build_model(SMALL, (2, 6, 6), seed=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    first = next(iter(model.layers))
    outputs = model.layer_outputs(x, [first])
    expected = model.layers[first].forward(x, training=False)
    assert list(outputs) == [first]
    np.testing.assert_array_equal(outputs[first], expected)
