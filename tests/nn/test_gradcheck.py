"""check_model: whole-model gradient checks pass on every shipped model, fail on a broken
backward pass naming the tensor, keep dropout masks fixed, tell kink crossings apart and leave
the model as it was."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from convtrain.errors import ConfigError, InternalError
from convtrain.nn import LAYERS, gradcheck
from convtrain.nn.gradcheck import INPUT_NAME, check_model
from convtrain.nn.model import build_model
from convtrain.ops.losses import softmax_cross_entropy
from tests.shipped_models import shipped_config

MODEL_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "model").glob("*.yaml"))
#: a small input for each shipped model (lenet5's valid 5x5 conv needs >= 12; seed_example's
#: five stride-2 convolutions >= 32); (1, 8, 8) for the others
SMALL_INPUTS = {"lenet5": (1, 12, 12), "cifar_cnn": (3, 8, 8), "resnet20": (3, 8, 8),
                "mobile_cnn": (3, 8, 8), "seed_example": (3, 32, 32)}


def shipped(name: str) -> dict:
    config = shipped_config(name)
    config.pop("input_shape", None)  # model.input_shape=null: built for the small input
    return config


def model_and_batch(name: str, input_shape=None, samples: int = 2, seed: int = 0):
    input_shape = input_shape or SMALL_INPUTS.get(name, (1, 8, 8))
    model = build_model(shipped(name), input_shape, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *input_shape))
    labels = rng.integers(0, model.output_shape[0], samples)
    return model, x, labels


def test_the_shipped_model_list_is_complete():
    assert {path.stem for path in MODEL_CONFIGS} >= {"small_cnn", "lenet5", "cifar_cnn"}


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda path: path.stem)
def test_every_shipped_model_passes(path):
    model, x, labels = model_and_batch(path.stem)
    report = check_model(model, x, labels, entries_per_tensor=4,
                         rng=np.random.default_rng(1))
    assert report.passed, str(report)
    assert report.exit_status == 0
    expected = [INPUT_NAME] + [f"{name}.{key}" for name, layer in model.layers.items()
                               for key in layer.params]
    assert [t.name for t in report.tensors] == expected  # frozen parameters too
    assert all(0 < t.checked <= 4 for t in report.tensors)
    assert report.verdict().startswith("gradcheck passed: worst relative error")


#: every layer type convtrain has, in one graph (a test below keeps it complete)
EVERY_LAYER = {"name": "every_layer", "layers": {
    "conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
    "bn1": {"type": "batchnorm2d"}, "relu1": {"type": "relu"},
    "pool1": {"type": "maxpool2d", "kernel_size": 2},
    "drop2d": {"type": "dropout2d", "p": 0.25},
    "conv2": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1, "groups": 2},
    "leaky": {"type": "leaky_relu", "negative_slope": 0.1},
    "skip": {"type": "identity", "inputs": "drop2d"},
    "add": {"type": "add", "inputs": ["leaky", "skip"]},
    "conv3": {"type": "conv2d", "filters": 6, "kernel_size": 3, "dilation": 2, "padding": 2},
    "elu": {"type": "elu"},
    "cat": {"type": "concat", "inputs": ["elu", "add"]},  # 6 + 4 channels
    "tanh": {"type": "tanh"},
    "pool2": {"type": "avgpool2d", "kernel_size": 3, "stride": 1, "padding": 1,
              "count_include_pad": False},
    "gelu": {"type": "gelu"},
    "conv4": {"type": "conv2d", "filters": 6, "kernel_size": 1},
    "silu": {"type": "silu"}, "gap": {"type": "global_avgpool2d"}, "flat": {"type": "flatten"},
    "fc1": {"type": "dense", "units": 12}, "bn1d": {"type": "batchnorm1d"},
    "sig": {"type": "sigmoid"}, "drop": {"type": "dropout", "p": 0.3},
    "fc2": {"type": "dense", "units": 6}, "softmax": {"type": "softmax"},
    "fc3": {"type": "dense", "units": 5}}}


def test_a_graph_with_every_layer_type_passes():
    assert {spec["type"] for spec in EVERY_LAYER["layers"].values()} == set(LAYERS)
    model = build_model(EVERY_LAYER, (3, 8, 8), seed=1, dtype=np.float64)
    rng = np.random.default_rng(0)
    report = check_model(model, rng.standard_normal((4, 3, 8, 8)), rng.integers(0, 5, 4),
                         entries_per_tensor=8, rng=rng)
    assert report.passed, str(report)
    assert len(report.tensors) == 1 + 2 * 7 + 2 * 2  # input, 4 conv + 3 dense, 2 batch norms


def full_forward_loss(model, x, labels, dropout_states):
    """The training loss by the model's own forward pass, dropout streams reset: an
    independent route to the numbers check_model computes from saved layer inputs."""
    for layer, state in dropout_states:
        layer.rng.bit_generator.state = state
    return softmax_cross_entropy(model.forward(x, training=True), labels)[0]


@pytest.mark.parametrize("name, tensors", [
    ("small_cnn", ("conv1.weight", "fc2.bias", INPUT_NAME)),  # a stack with dropout
    ("resnet20", ("stage2.block1.proj.weight", "stage1.block2.bn1.bias", INPUT_NAME)),  # a graph
])
def test_reported_values_match_an_independent_computation(name, tensors):
    """The worst entry's analytic and numeric values: the first from model.backward, the second
    from central differences of the model's own full forward passes (check_model starts its
    passes at the perturbed layer, from saved activations)."""
    model, x, labels = model_and_batch(name)
    dropout_states = [(layer, layer.rng.bit_generator.state) for layer in model.layers.values()
                      if layer.uses_random_stream]
    assert bool(dropout_states) == (name == "small_cnn")  # its mask must stay fixed
    report = check_model(model, x, labels, input_noise=0.0, entries_per_tensor=4,
                         rng=np.random.default_rng(2))
    by_name = {t.name: t for t in report.tensors}

    for layer, state in dropout_states:
        layer.rng.bit_generator.state = state
    _, dlogits = softmax_cross_entropy(model.forward(x, training=True), labels)
    dx = model.backward(dlogits)
    for tensor in tensors:
        check = by_name[tensor]
        if tensor == INPUT_NAME:
            array, analytic = x, dx
        else:
            layer_name, key = tensor.rsplit(".", 1)
            layer = model.layers[layer_name]
            array, analytic = layer.params[key], layer.grads[key]
        assert check.analytic == pytest.approx(float(analytic[check.worst_index]), rel=1e-10)
        numeric = _one_entry_difference(model, x, labels, dropout_states, array,
                                        check.worst_index)
        assert check.numeric == pytest.approx(numeric, rel=1e-9, abs=1e-12), tensor


def _one_entry_difference(model, x, labels, dropout_states, array, index, eps=1e-6):
    original = array[index]
    array[index] = original + eps
    plus = full_forward_loss(model, x, labels, dropout_states)
    array[index] = original - eps
    minus = full_forward_loss(model, x, labels, dropout_states)
    array[index] = original
    return (plus - minus) / (2 * eps)


def break_param_gradient(monkeypatch, layer, key, change):
    """Make ``layer.backward`` return the right input gradient but ``change`` ``grads[key]``."""
    honest = layer.backward

    def broken(dy, **kwargs):
        dx = honest(dy, **kwargs)
        layer.grads[key] = change(layer.grads[key])
        return dx

    monkeypatch.setattr(layer, "backward", broken)


def test_a_one_percent_slip_in_a_weight_gradient_fails_naming_that_tensor(monkeypatch):
    model, x, labels = model_and_batch("small_cnn")
    break_param_gradient(monkeypatch, model.layers["conv2"], "weight", lambda g: g * 1.01)
    report = check_model(model, x, labels, entries_per_tensor=8)
    assert [t.name for t in report.failed] == ["conv2.weight"]
    failed = report.failed[0]
    assert failed.worst_error == pytest.approx(0.01 / 1.01, rel=1e-3)
    assert failed.kinks == 0 and failed.status == "FAIL"
    assert report.exit_status == 1
    assert report.verdict().startswith("gradcheck FAILED: conv2.weight 9.90e-03 above the "
                                       "threshold")
    assert "FAIL" in str(report).splitlines()[[t.name for t in report.tensors].index(
        "conv2.weight") + 3]


def test_a_threshold_below_rounding_noise_is_warned_about():
    """threshold 1e-12: the floor (rounding noise / threshold) exceeds every gradient, so every
    entry is only an absolute test; the verdict says so. The default threshold does not."""
    model, x, labels = model_and_batch("small_cnn")
    tiny = check_model(model, x, labels, entries_per_tensor=4, threshold=1e-12)
    largest = max(max(np.abs(t.analytic), np.abs(t.numeric)) for t in tiny.tensors
                  if t.worst_index is not None)
    assert tiny.floor > largest  # what the warning is about, from the reported gradients
    assert "warning: the floor" in tiny.verdict() and "absolute test" in tiny.verdict()
    assert "\n" not in tiny.verdict()
    default = check_model(model, x, labels, entries_per_tensor=4)
    assert default.floor_warning() is None and "warning" not in default.verdict()


def test_a_dropped_bias_gradient_fails_naming_that_tensor(monkeypatch):
    model, x, labels = model_and_batch("lenet5")
    break_param_gradient(monkeypatch, model.layers["fc1"], "bias", lambda g: g * 0)
    report = check_model(model, x, labels, entries_per_tensor=8)
    assert [t.name for t in report.failed] == ["fc1.bias"]
    assert report.failed[0].worst_error == pytest.approx(1.0)


def test_a_wrong_input_gradient_fails_every_tensor_below_it(monkeypatch):
    """A ReLU passing 1.01x its input gradient: the layers under it and the input fail, the
    ones above it pass."""
    model, x, labels = model_and_batch("lenet5")
    relu = model.layers["relu3"]  # after fc1
    honest = relu.backward
    monkeypatch.setattr(relu, "backward", lambda dy: honest(dy) * 1.01)
    report = check_model(model, x, labels, entries_per_tensor=8)
    assert {t.name for t in report.failed} == {
        INPUT_NAME, "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
        "fc1.bias"}


def test_dropout_masks_are_fixed_across_the_perturbed_passes(monkeypatch):
    """The shipped small_cnn (dropout p=0.25) passes above; without resetting the random
    streams before each forward pass every mask differs and the check fails."""
    model, x, labels = model_and_batch("small_cnn")
    monkeypatch.setattr(gradcheck._ModelState, "reset_random", lambda self: None)
    report = check_model(model, x, labels, entries_per_tensor=4)
    assert not report.passed


def test_the_model_is_left_as_it_was():
    model, x, labels = model_and_batch("cifar_cnn")
    before = model.state_dict()
    dropout = model.layers["drop1"]
    rng_before = dropout.rng.bit_generator.state
    x_before = x.copy()
    check_model(model, x, labels, entries_per_tensor=4)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key in before:  # running statistics included
        np.testing.assert_array_equal(after[key], before[key], err_msg=key)
    assert dropout.rng.bit_generator.state == rng_before
    np.testing.assert_array_equal(x, x_before)


def kinked_model(offset):
    """dense(2) -> relu -> dense(3) on one sample, unit 0's pre-activation at ``offset``."""
    config = {"name": "kink", "layers": {"fc1": {"type": "dense", "units": 2},
                                         "relu": {"type": "relu"},
                                         "fc2": {"type": "dense", "units": 3}}}
    model = build_model(config, (4,), seed=0, dtype=np.float64)
    x = np.array([[0.5, -1.0, 2.0, 0.25]])
    fc1 = model.layers["fc1"]
    pre = fc1.params["weight"] @ x[0]
    fc1.params["bias"][:] = [offset - pre[0], 1.0 - pre[1]]
    return model, x, np.array([2])


def test_a_crossed_relu_kink_is_reported_not_failed():
    """fc1.bias[0] at +eps/2 from the ReLU's kink: x - eps lands on the other side, so the
    central difference is 3/4 of the true slope, while the backward difference alone agrees."""
    eps = 1e-6
    model, x, labels = kinked_model(eps / 2)
    report = check_model(model, x, labels, eps=eps, input_noise=0.0, entries_per_tensor=None)
    by_name = {t.name: t for t in report.tensors}
    bias = by_name["fc1.bias"]
    assert bias.kinks == 1 and bias.passed and bias.worst_index == (1,)  # entry 0 left out
    assert report.passed
    # every entry that moves unit 0's pre-activation by more than eps/2 crosses it too
    assert "kink crossings not counted" in report.verdict()
    # away from the kink, the same entry is smooth: no kink, same verdict
    smooth = check_model(*kinked_model(0.5), eps=eps, input_noise=0.0, entries_per_tensor=None)
    assert smooth.passed and all(t.kinks == 0 for t in smooth.tensors)


def test_a_wrong_gradient_at_a_kink_still_fails(monkeypatch):
    """The one-sided test does not excuse a real error: a 1 % slip in fc1.bias fails although
    one of its entries crosses a kink."""
    model, x, labels = kinked_model(1e-6 / 2)
    break_param_gradient(monkeypatch, model.layers["fc1"], "bias", lambda g: g * 1.01)
    report = check_model(model, x, labels, input_noise=0.0, entries_per_tensor=None)
    assert [t.name for t in report.failed] == ["fc1.bias"]


def test_ties_in_real_images_are_broken_by_the_input_noise():
    """A constant background makes max-pooling ties the check cannot confirm (the input's
    gradient fails); the default input noise removes them."""
    model = build_model(shipped("small_cnn"), (1, 8, 8), seed=0, dtype=np.float64)
    x = np.full((1, 1, 8, 8), -0.8)
    x[:, :, 2:6, 3:5] = 1.5  # a stroke on a constant background
    labels = np.array([3])
    tied = check_model(model, x, labels, input_noise=0.0, entries_per_tensor=64)
    assert INPUT_NAME in [t.name for t in tied.failed]
    assert check_model(model, x, labels, entries_per_tensor=64).passed


def test_a_gradient_that_is_exactly_zero_passes_through_the_floor():
    """A conv bias before batch norm has no effect on the loss: analytic ~1e-17, numeric
    rounding noise ~1e-10; the floor keeps that from reading as a relative error of 1."""
    config = {"name": "bias_bn", "layers": {
        "conv1": {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
        "bn1": {"type": "batchnorm2d"}, "relu1": {"type": "relu"},
        "flat": {"type": "flatten"}, "fc": {"type": "dense", "units": 4}}}
    model = build_model(config, (2, 5, 5), seed=3, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 5, 5))
    report = check_model(model, x, np.array([0, 3, 1]), entries_per_tensor=None)
    bias = next(t for t in report.tensors if t.name == "conv1.bias")
    assert abs(bias.analytic) < 1e-12 and bias.passed
    assert report.passed, str(report)


def test_the_table_is_aligned():
    model, x, labels = model_and_batch("lenet5")
    text = str(check_model(model, x, labels, entries_per_tensor=4))
    lines = text.splitlines()
    header, rows = lines[1], lines[3:-2]
    assert len(rows) == 11 and lines[2] == lines[-2] == "-" * len(lines[2])
    for column in ("checked", "worst rel err", "kinks"):  # right-aligned numbers
        end = header.index(column) + len(column)
        assert all(row[end - 1] != " " and row[end] == " " for row in rows), column
    status = header.index("status")
    assert all(row[status:] == "ok" for row in rows)
    assert lines[-1].startswith("gradcheck passed")


@pytest.mark.parametrize("key, value, message", [
    ("eps", 0.0, "gradcheck.eps: must be > 0, got 0.0"),
    ("threshold", -1.0, "gradcheck.threshold: must be > 0, got -1.0"),
    ("entries_per_tensor", 0, "gradcheck.entries_per_tensor: expected a positive integer"),
    ("input_noise", float("nan"), "gradcheck.input_noise: expected a finite number"),
])
def test_bad_settings_are_one_line_naming_the_key(key, value, message):
    model, x, labels = model_and_batch("single_5x5")
    with pytest.raises(ConfigError, match=f"^{message}"):
        check_model(model, x, labels, **{key: value})


def test_a_float32_model_or_a_wrong_input_is_refused():
    model = build_model(shipped("small_cnn"), (1, 8, 8))
    with pytest.raises(InternalError, match="float64 model"):
        check_model(model, np.zeros((2, 1, 8, 8)), np.array([0, 1]))
    model, x, labels = model_and_batch("small_cnn")
    with pytest.raises(ConfigError, match=r"model input: expected a batch of shape \(N, 1, 8, 8\)"):
        check_model(model, np.zeros((2, 1, 9, 9)), labels)


@pytest.mark.slow
def test_cifar_cnn_on_two_32x32_samples_takes_seconds():
    model, x, labels = model_and_batch("cifar_cnn", (3, 32, 32))
    start = time.perf_counter()
    report = check_model(model, x, labels)
    seconds = time.perf_counter() - start
    assert report.passed, str(report)
    assert sum(t.checked for t in report.tensors) > 16 * 32
    print(f"\ncifar_cnn gradcheck on 2 x 3x32x32: {seconds:.1f} s")
    assert seconds < 60  # ~4 s on an idle 2-core machine; ~22 s measured under a load of 7


def test_a_device_model_is_checked_like_a_host_one(strict_cupy):
    """On the CuPy stand-in (device arrays that refuse implicit host conversion) the check
    perturbs device arrays in place and passes (the dropout masks differ from NumPy's: a device
    generator draws them, so the values are not compared)."""
    model, x, labels = model_and_batch("cifar_cnn")
    model.to_backend("cupy")
    before = {key: value.get() for key, value in model.layers["conv1"].params.items()}
    report = check_model(model, x, labels, entries_per_tensor=3)
    assert report.passed, str(report)
    assert len(report.tensors) == 17 and all(t.checked == 3 for t in report.tensors)
    weight = model.layers["conv1"].params["weight"]
    assert type(weight) is strict_cupy.ndarray
    np.testing.assert_array_equal(weight.get(), before["weight"])
