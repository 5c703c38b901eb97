"""Layers: finite-difference gradients through the layer API (float64), forward semantics
against independent NumPy/SciPy expressions and PyTorch, the CuPy stand-in, and config
validation messages."""
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit, ndtr, softmax as scipy_softmax

from convtrain.errors import ConfigError, InternalError
from convtrain.nn import (ELU, GELU, LAYERS, AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dense,
                          Dropout, Dropout2d, Flatten, LeakyReLU, MaxPool2d, ReLU, Sigmoid, SiLU,
                          Softmax, Tanh, build_layer)
from tests.gradcheck import check_gradients, projected_sum

F64 = np.float64


def gradcheck_layer(layer, x, *, training=True, before_forward=lambda: None, tol=1e-6):
    """FD-check d(sum(dy * layer(x)))/d(x and every param) against ``layer.backward``."""
    rng = np.random.default_rng(123)
    before_forward()
    y = layer.forward(x, training=training)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    analytic = {"x": dx, **{f"param {k}": np.array(g) for k, g in layer.grads.items()}}
    inputs = {"x": x, **{f"param {k}": p for k, p in layer.params.items()}}
    assert set(layer.grads) == set(layer.params)

    def loss():
        before_forward()
        return projected_sum(layer.forward(x, training=training), dy)

    check_gradients(loss, inputs, analytic, tol=tol)
    return y


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# --- gradient checks ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, x_shape", [
    (dict(kernel_size=3), (2, 2, 5, 5)),
    (dict(kernel_size=3, stride=2, padding=1), (2, 2, 7, 6)),
    (dict(kernel_size=2, stride=3), (1, 3, 8, 7)),
    (dict(kernel_size=3, padding="same"), (2, 2, 5, 4)),
    (dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0)), (2, 2, 5, 6)),
    (dict(kernel_size=3, dilation=2, padding=2), (1, 2, 6, 7)),
    (dict(kernel_size=3, groups=2, padding="valid"), (2, 4, 5, 5)),
    (dict(kernel_size=1, bias=False), (2, 3, 3, 3)),
])
def test_conv2d_gradients(kwargs, x_shape):
    layer = Conv2d(x_shape[1], 4, rng=np.random.default_rng(1), dtype=F64, **kwargs)
    y = gradcheck_layer(layer, randn(*x_shape))
    assert y.shape[1:] == layer.output_shape(x_shape[1:])
    assert set(layer.params) == ({"weight", "bias"} if kwargs.get("bias", True) else {"weight"})


def test_same_padding_keeps_the_spatial_size():
    layer = Conv2d(2, 3, 5, padding="same", dilation=(1, 2), dtype=F64)
    assert layer.forward(randn(1, 2, 9, 11)).shape == (1, 3, 9, 11)


@pytest.mark.parametrize("layer_cls, kwargs", [
    (MaxPool2d, dict(kernel_size=3, stride=2)),  # overlapping windows
    (MaxPool2d, dict(kernel_size=2)),
    (MaxPool2d, dict(kernel_size=(3, 2), stride=1, padding=1)),
    (AvgPool2d, dict(kernel_size=3, stride=2)),
    (AvgPool2d, dict(kernel_size=3, stride=1, padding=1, count_include_pad=False)),
    (AvgPool2d, dict(kernel_size=2)),
])
def test_pool_gradients(layer_cls, kwargs):
    layer = layer_cls(**kwargs)
    x = randn(2, 3, 7, 6)
    y = gradcheck_layer(layer, x)
    assert y.shape[1:] == layer.output_shape(x.shape[1:])


def test_pooling_forward_matches_window_loops():
    x = randn(2, 2, 7, 7)
    y_max = MaxPool2d(3, stride=2).forward(x)
    y_avg = AvgPool2d(3, stride=2).forward(x)
    for i in range(3):
        for j in range(3):
            window = x[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            np.testing.assert_allclose(y_max[:, :, i, j], window.max(axis=(2, 3)))
            np.testing.assert_allclose(y_avg[:, :, i, j], window.mean(axis=(2, 3)))


def _gelu_tanh(x):
    return x / 2 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("layer, reference", [
    (ReLU(), lambda x: np.maximum(x, 0)),
    (LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (Tanh(), np.tanh),
    (Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(np.minimum(x, 0)))),
    (SiLU(), lambda x: x * expit(x)),
    (GELU(), lambda x: x * ndtr(x)),
    (GELU("tanh"), _gelu_tanh),
    (Softmax(), lambda x: scipy_softmax(x, axis=1)),  # over the channels at each pixel
])
def test_activation_forward_and_gradients(layer, reference):
    x = randn(3, 2, 4, 5)
    y = gradcheck_layer(layer, x)
    np.testing.assert_allclose(y, reference(x), rtol=1e-12, atol=1e-15)


def test_dense_forward_and_gradients():
    layer = Dense(7, 4, rng=np.random.default_rng(0), dtype=F64)
    layer.params["bias"][:] = randn(4, seed=5)
    x = randn(5, 7)
    y = gradcheck_layer(layer, x)
    np.testing.assert_allclose(y, x @ layer.params["weight"].T + layer.params["bias"])
    assert layer.params["weight"].shape == (4, 7)  # nn.Linear layout (out, in)


def test_flatten_is_c_order_and_its_gradient_reshapes_back():
    layer = Flatten()
    x = randn(2, 3, 4, 5)
    y = gradcheck_layer(layer, x)
    np.testing.assert_array_equal(y[1], np.array([x[1, c, h, w] for c in range(3)
                                                  for h in range(4) for w in range(5)]))
    assert layer.output_shape((3, 4, 5)) == (60,)


def test_dropout_gradients_with_a_fixed_mask():
    layer = Dropout(0.4)
    x = randn(4, 3, 5, 5)
    y = gradcheck_layer(layer, x, before_forward=lambda: layer.seed_rng(7))
    kept = y != 0
    assert 0.45 < kept.mean() < 0.75  # ~60 % kept
    np.testing.assert_allclose(y[kept], x[kept] / 0.6)


def test_dropout_is_identity_in_eval_mode_and_reproducible_in_training():
    layer = Dropout(0.5)
    x = randn(8, 16)
    assert layer.forward(x, training=False) is x
    assert layer.backward(x) is x
    layer.seed_rng(3)
    first = layer.forward(x)
    layer.seed_rng(3)
    np.testing.assert_array_equal(layer.forward(x), first)
    assert not np.array_equal(layer.forward(x), first)  # the stream moves on


def test_batchnorm_train_mode_gradients_and_statistics():
    layer = BatchNorm2d(3, momentum=0.3, dtype=F64)
    layer.params["weight"][:] = [0.5, 2.0, -1.0]
    layer.params["bias"][:] = [0.1, 0.0, 3.0]
    x = randn(4, 3, 3, 2) * 2 + 1
    gradcheck_layer(layer, x, training=True)
    # One more forward from fresh buffers to check the running-stat update independently.
    layer.buffers["running_mean"][:] = 0
    layer.buffers["running_var"][:] = 1
    y = layer.forward(x, training=True)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
                * layer.params["weight"][:, None, None] + layer.params["bias"][:, None, None])
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.3 * mean)
    n = x.size // 3
    np.testing.assert_allclose(layer.buffers["running_var"], 0.7 + 0.3 * var * n / (n - 1))


def test_batchnorm_eval_mode_uses_and_keeps_running_stats():
    layer = BatchNorm2d(2, dtype=F64)
    layer.buffers["running_mean"][:] = [1.0, -2.0]
    layer.buffers["running_var"][:] = [4.0, 0.25]
    x = randn(3, 2, 2, 2)
    y = gradcheck_layer(layer, x, training=False)
    expected = (x - np.array([1.0, -2.0])[:, None, None]) / np.sqrt(
        np.array([4.0, 0.25])[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected)
    np.testing.assert_array_equal(layer.buffers["running_mean"], [1.0, -2.0])


def test_softmax_on_flat_features_gradients_and_probabilities():
    y = gradcheck_layer(Softmax(), randn(4, 6) * 3)
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-14)
    assert np.all(y > 0)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm1d_gradients_and_statistics(training):
    layer = BatchNorm1d(4, momentum=0.25, dtype=F64)
    layer.params["weight"][:] = [0.5, 2.0, -1.0, 1.5]
    layer.params["bias"][:] = [0.1, 0.0, 3.0, -2.0]
    layer.buffers["running_mean"][:] = [1.0, -1.0, 0.5, 0.0]
    layer.buffers["running_var"][:] = [4.0, 0.25, 1.0, 2.0]
    x = randn(5, 4) * 2 + 1
    stats = {k: v.copy() for k, v in layer.buffers.items()}

    def restore():  # every forward of the check starts from the same running statistics
        for key, value in stats.items():
            layer.buffers[key] = value.copy()

    y = gradcheck_layer(layer, x, training=training, before_forward=restore)
    mean, var = ((x.mean(axis=0), x.var(axis=0)) if training
                 else (stats["running_mean"], stats["running_var"]))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5) * layer.params["weight"]
                               + layer.params["bias"], rtol=1e-10)
    restore()
    layer.forward(x, training=training)
    expected_mean = (0.75 * stats["running_mean"] + 0.25 * x.mean(axis=0) if training
                     else stats["running_mean"])
    np.testing.assert_allclose(layer.buffers["running_mean"], expected_mean)
    assert layer.output_shape((4,)) == (4,) and layer.uses_batch_statistics


def test_dropout2d_gradients_with_a_fixed_mask_drop_whole_maps():
    layer = Dropout2d(0.5)
    x = randn(6, 5, 3, 4)
    y = gradcheck_layer(layer, x, before_forward=lambda: layer.seed_rng(11))
    dropped = np.all(y == 0, axis=(2, 3))
    assert 0 < dropped.mean() < 1  # some maps of the 30 dropped, some kept
    np.testing.assert_allclose(y[~dropped], x[~dropped] * 2)
    assert not np.any(y[~dropped] == 0)


def test_dropout2d_is_identity_in_eval_mode_and_its_masks_come_back_from_a_checkpoint():
    """The stream is dropout's: build_model seeds it, a checkpoint saves it, resume puts it
    back, and the masks that follow are the uninterrupted run's."""
    from convtrain.nn.model import build_model
    from convtrain.training.checkpointing import layer_rngs
    from convtrain.training.resume import _restore_layer_rngs

    model = build_model({"layers": {"drop": {"type": "dropout2d", "p": 0.5},
                                    "flat": {"type": "flatten"}}}, (8, 2, 2), seed=3,
                        dtype=np.float64)
    layer, x = model.layers["drop"], randn(16, 8, 2, 2)
    np.testing.assert_array_equal(model.forward(x, training=False), x.reshape(16, -1))
    assert layer.mask is None
    assert set(layer_rngs(model)) == {"drop"}
    model.forward(x)  # the stream moves on, as in training
    saved = layer.rng.bit_generator.state
    expected = [model.forward(x).copy() for _ in range(2)]
    _restore_layer_rngs(model, {"drop": saved}, "checkpoint")
    for want in expected:
        np.testing.assert_array_equal(model.forward(x), want)
    assert build_model({"layers": {"drop": {"type": "dropout2d", "p": 0.5}}}, (8, 2, 2),
                       seed=3).layers["drop"].seed == layer.seed


# --- PyTorch equivalence (float64, forward and backward, training and evaluation) -------------
class _TorchMask:
    """A stand-in Generator whose uniforms reproduce a given keep-mask (kept -> 1, dropped -> 0),
    so that a dropout layer of ours draws PyTorch's mask."""

    def __init__(self, kept):
        self.kept = kept

    def random(self, shape, dtype):
        return self.kept.reshape(shape).astype(dtype)


def _torch_reference(name, torch):
    nn = torch.nn
    return {"gelu": (GELU(), nn.GELU()),
            "gelu_tanh": (GELU("tanh"), nn.GELU(approximate="tanh")),
            "silu": (SiLU(), nn.SiLU()),
            "elu": (ELU(0.7), nn.ELU(alpha=0.7)),
            "softmax": (Softmax(), nn.Softmax(dim=1)),
            "batchnorm1d": (BatchNorm1d(5, momentum=0.3, eps=1e-3, dtype=F64),
                            nn.BatchNorm1d(5, momentum=0.3, eps=1e-3)),
            "dropout2d": (Dropout2d(0.4), nn.Dropout2d(0.4))}[name]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name, x_shape", [
    ("gelu", (3, 4, 5, 5)), ("gelu_tanh", (3, 4, 5, 5)), ("silu", (3, 4, 5, 5)),
    ("elu", (3, 4, 5, 5)), ("softmax", (3, 4, 5, 5)), ("softmax", (6, 7)),
    ("batchnorm1d", (6, 5)), ("dropout2d", (4, 6, 3, 3)),
])
def test_layer_equals_torch(name, x_shape, training):
    torch = pytest.importorskip("torch")
    layer, module = _torch_reference(name, torch)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape) * 2
    for key in layer.params:  # non-trivial parameters and statistics on both sides
        layer.params[key][:] = rng.uniform(0.5, 1.5, layer.params[key].shape)
    for key in layer.buffers:
        layer.buffers[key][:] = rng.uniform(0.5, 1.5, layer.buffers[key].shape)
    module.double().train(training)
    module.load_state_dict({k: torch.from_numpy(v.copy())
                            for k, v in {**layer.params, **layer.buffers}.items()}, strict=False)
    tx = torch.tensor(x, requires_grad=True)
    torch.manual_seed(0)
    ty = module(tx)
    if name == "dropout2d" and training:  # our layer draws PyTorch's mask: same maps dropped
        kept = (ty.detach().numpy() != 0).any(axis=(2, 3))
        assert 0 < kept.mean() < 1
        layer.rng = _TorchMask(kept)
    dy = rng.standard_normal(x_shape)
    ty.backward(torch.from_numpy(dy))
    y = layer.forward(x, training=training)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for key in layer.params:
        np.testing.assert_allclose(layer.grads[key], module.get_parameter(key).grad.numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=key)
    for key in layer.buffers:
        np.testing.assert_allclose(layer.buffers[key], module.get_buffer(key).numpy(),
                                   rtol=1e-12, err_msg=key)


# --- the CuPy stand-in ------------------------------------------------------------------------
NEW_LAYERS = {"layers": {
    "conv1": {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": 1},
    "gelu1": {"type": "gelu"}, "drop1": {"type": "dropout2d", "p": 0.3},
    "gate": {"type": "softmax"}, "elu1": {"type": "elu", "alpha": 0.5},
    "flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 10},
    "bn1": {"type": "batchnorm1d"}, "silu1": {"type": "silu"},
    "gelu2": {"type": "gelu", "approximate": "tanh"}, "fc2": {"type": "dense", "units": 3}}}


def _run_new_layers(backend_name, training):
    from convtrain.nn.model import build_model
    from convtrain.runtime.backend import get_backend

    backend = get_backend(backend_name)
    model = build_model(NEW_LAYERS, (2, 5, 5), seed=1, dtype=np.float64, backend=backend)
    x = backend.asarray(randn(4, 2, 5, 5))
    logits = model.forward(x, training=training, keep_for_backward=True)
    mask = model.layers["drop1"].mask  # (backward lets go of it)
    dx = model.backward(backend.asarray(randn(4, 3, seed=1)))
    grads = {f"{name}.{key}": backend.to_numpy(g) for name, layer in model.layers.items()
             for key, g in layer.grads.items()}
    return model, mask, backend.to_numpy(logits), backend.to_numpy(dx), grads


def test_new_layers_run_on_the_cupy_stand_in_like_numpy(strict_cupy):
    _, _, logits, dx, grads = _run_new_layers("numpy", training=False)
    model, _, device_logits, device_dx, device_grads = _run_new_layers("cupy", training=False)
    assert type(model.layers["bn1"].buffers["running_mean"]) is strict_cupy.ndarray
    np.testing.assert_allclose(device_logits, logits, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(device_dx, dx, rtol=1e-10, atol=1e-13)
    assert device_grads.keys() == grads.keys()
    for key, grad in grads.items():
        np.testing.assert_allclose(device_grads[key], grad, rtol=1e-10, atol=1e-13, err_msg=key)
    # training: device masks (whole maps) and batch statistics on device arrays
    model, mask, logits, dx, grads = _run_new_layers("cupy", training=True)
    assert type(mask) is strict_cupy.ndarray and mask.shape == (4, 6, 1, 1)
    assert np.isfinite(logits).all() and np.isfinite(dx).all()
    assert all(np.isfinite(g).all() for g in grads.values())
    assert isinstance(model.layers["drop1"].rng, np.random.Generator)  # the saveable state


def test_new_layers_through_the_model_summary():
    from convtrain.nn.model import build_model

    rows = {row["name"]: row for row in build_model(NEW_LAYERS, (2, 5, 5)).summary_rows()}
    assert rows["gelu1"]["flops"] == 4 * 150 and rows["gelu2"]["flops"] == 9 * 10
    assert rows["gate"]["flops"] == 5 * 150 and rows["elu1"]["flops"] == 3 * 150
    assert rows["bn1"]["flops"] == 2 * 10 and rows["bn1"]["params"] == 20
    assert rows["silu1"]["flops"] == 2 * 10 and rows["drop1"]["flops"] == 0


# --- depthwise-separable convolutions: a documented pattern, not a layer -----------------------
README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_depthwise_separable_block_matches_torch():
    """The README's YAML builds, has the parameter counts the README states, and equals
    ``nn.Conv2d(C, C, 3, groups=C)`` + ``nn.Conv2d(C, F, 1)`` (state_dict, logits, input
    gradient)."""
    torch = pytest.importorskip("torch")
    import yaml

    from convtrain.nn.model import build_model

    text = README.read_text()
    section = text[text.index("**Depthwise-separable convolutions**"):]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    model = build_model(config["model"], (16, 8, 8), seed=0, dtype=np.float64)
    nn = torch.nn
    depthwise, pointwise = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1)
    full = nn.Conv2d(16, 32, 3, padding=1)
    counts = {name: sum(p.numel() for p in m.parameters())
              for name, m in (("dw", depthwise), ("pw", pointwise), ("full", full))}
    assert model.layers["dw"].num_params() == counts["dw"] == 160
    assert model.layers["pw"].num_params() == counts["pw"] == 544
    assert (f"`dw` has {counts['dw']} parameters and `pw` {counts['pw']}" in section
            and f"{counts['full']:,}" in section)
    reference = nn.Sequential(OrderedDict(dw=depthwise, pw=pointwise)).double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    x = randn(2, 16, 8, 8)
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    dy = randn(*ty.shape, seed=1)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(model.forward(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.backward(dy), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


# --- softmax is never the output: the loss takes logits ---------------------------------------
def test_a_softmax_output_layer_is_refused_and_one_inside_the_model_is_not():
    from types import SimpleNamespace

    from convtrain.nn.model import build_model
    from convtrain.training.fit_checks import check_model_fits_data

    data = SimpleNamespace(name="digits", num_classes=3, train=[0] * 10)
    layers = {"fc1": {"type": "dense", "units": 4}, "gate": {"type": "softmax"},
              "fc2": {"type": "dense", "units": 3}}
    check_model_fits_data(build_model({"layers": layers}, (5,)), data)
    layers["prob"] = {"type": "softmax"}
    with pytest.raises(ConfigError, match=r"^model\.layers\.prob: a softmax layer cannot be the "
                                          r"model's output: the training loss is softmax "
                                          r"cross-entropy on logits"):
        check_model_fits_data(build_model({"layers": layers}, (5,)), data)


def test_batchnorm1d_gets_the_drop_last_policy():
    from convtrain.nn.model import build_model
    from convtrain.training.fit_checks import resolve_drop_last

    model = build_model({"layers": {"fc": {"type": "dense", "units": 4},
                                    "bn": {"type": "batchnorm1d"}}}, (5,))
    assert resolve_drop_last(model, 33, 8, None) is True  # the last batch would hold 1 sample
    with pytest.raises(ConfigError, match=r"trainer\.drop_last: false .* batchnorm layer "
                                          r"model\.layers\.bn cannot train on \(one value per "
                                          r"feature\)"):
        resolve_drop_last(model, 33, 8, False)


def test_float32_is_the_default_and_preserved():
    conv = Conv2d(1, 2, 3)
    x = randn(1, 1, 4, 4).astype(np.float32)
    assert conv.params["weight"].dtype == np.float32
    assert conv.forward(x).dtype == np.float32


# --- FLOPs and descriptions -------------------------------------------------------------------
def test_flops_follow_the_documented_formulas():
    conv = Conv2d(4, 6, 3, stride=1, padding=1, groups=2)
    # 2 * F * oh * ow * (C/groups) * kh * kw + F * oh * ow
    assert conv.flops((4, 8, 8)) == 2 * 6 * 64 * 2 * 9 + 6 * 64
    assert Conv2d(4, 6, 3, bias=False).flops((4, 8, 8)) == 2 * 6 * 36 * 4 * 9
    assert Dense(10, 3).flops((10,)) == 2 * 10 * 3 + 3
    assert MaxPool2d(2).flops((3, 8, 8)) == 3 * 16 * 4
    assert ReLU().flops((3, 8, 8)) == 192
    assert Flatten().flops((3, 8, 8)) == 0
    assert ELU().flops((3, 8, 8)) == 3 * 192 and SiLU().flops((10,)) == 20
    assert GELU().flops((3, 8, 8)) == 4 * 192 and GELU("tanh").flops((3, 8, 8)) == 9 * 192
    assert Softmax().flops((10,)) == 50
    assert BatchNorm1d(10).flops((10,)) == 20 and Dropout2d().flops((3, 8, 8)) == 0


# --- construction-time and forward-time errors --------------------------------------------------
def test_direct_construction_validates_arguments():
    with pytest.raises(ConfigError, match=r"layer 'conv2d' argument 'out_channels': must be >= 1"):
        Conv2d(3, 0, 3)
    with pytest.raises(ConfigError, match=r"argument 'kernel_size': expected an integer or a list"):
        Conv2d(3, 4, 2.5)
    with pytest.raises(ConfigError, match=r"argument 'groups'.*3 input channels.*groups=2"):
        Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ConfigError, match=r"layer 'dropout' argument 'p': must be in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ConfigError, match=r"^layer 'gelu' argument 'approximate': expected one "
                                          r"of 'none', 'tanh', got 'tahn'; did you mean 'tanh'\?$"):
        GELU("tahn")
    with pytest.raises(ConfigError, match=r"layer 'elu' argument 'alpha': expected a number"):
        ELU("1")


def test_forward_checks_the_per_sample_shape():
    """A wrong batch handed to a layer directly is API misuse (a model checks its input):
    InternalError, still naming the layer and both shapes."""
    with pytest.raises(InternalError, match=r"layer 'fc'.*\(5,\).*\(2, 7\).*per-sample \(7,\)"):
        Dense(5, 2, name="fc").forward(np.zeros((2, 7), np.float32))
    with pytest.raises(InternalError, match=r"layer 'conv2d'.*C=3.*\(2, 1, 8, 8\)"):
        Conv2d(3, 2, 3).forward(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(InternalError, match=r"layer 'dense'.*add a `flatten` layer before it"):
        Dense(12, 2).forward(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(InternalError, match=r"layer 'batchnorm2d'.*C=4"):
        BatchNorm2d(4).forward(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(InternalError, match=r"layer 'flatten': expects a batch"):
        Flatten().forward(np.float32(1.0))
    with pytest.raises(InternalError, match=r"layer 'batchnorm1d'.*\(4,\).*\(2, 3\)"):
        BatchNorm1d(4).forward(np.zeros((2, 3), np.float32))
    with pytest.raises(InternalError, match=r"layer 'dropout2d'.*\(C, H, W\).*\(2, 12\)"):
        Dropout2d().forward(np.zeros((2, 12), np.float32), training=False)
    for layer in (GELU(), SiLU(), ELU(), Softmax(), BatchNorm1d(3)):
        with pytest.raises(InternalError, match=re.escape(f"{layer.where}: backward() called "
                                                          f"before forward()")):
            layer.backward(np.zeros((2, 3), np.float32))


# --- from_config / build_layer errors -------------------------------------------------------
DEFAULTS = {"init": "he_normal", "rng": np.random.default_rng(0), "dtype": np.float32}


def build(spec, input_shape=(1, 8, 8), name="conv1"):
    return build_layer(name, spec, input_shape, DEFAULTS)


def test_build_layer_infers_input_sizes_and_remembers_shapes():
    conv = build({"type": "conv2d", "filters": 5, "kernel_size": 3}, (3, 8, 8))
    assert conv.params["weight"].shape == (5, 3, 3, 3)
    assert conv.input_shape == (3, 8, 8) and conv.output_shape() == (5, 6, 6)
    dense = build({"type": "dense", "units": 4}, (12,), name="fc")
    assert dense.params["weight"].shape == (4, 12)
    bn = build({"type": "batchnorm2d", "momentum": 0.2}, (6, 4, 4), name="bn")
    assert bn.params["weight"].shape == (6,) and bn.momentum == 0.2
    frozen = build({"type": "conv2d", "filters": 2, "kernel_size": 3, "trainable": False,
                    "weight_decay_mult": 0.5, "init": "sobel"})
    assert not frozen.trainable and frozen.weight_decay_mult == 0.5


def test_kernel_larger_than_input_names_the_key_and_shapes():
    expected = ("model.layers.conv1.kernel_size: kernel 7x7 (dilation 1) is larger than the "
                "padded input 5x5 (input shape (1, 5, 5), padding 0)")
    with pytest.raises(ConfigError) as info:
        build({"type": "conv2d", "filters": 4, "kernel_size": 7}, (1, 5, 5))
    assert str(info.value) == expected
    with pytest.raises(ConfigError, match=r"model.layers.pool.kernel_size: kernel 3x3 .* 2x2"):
        build({"type": "maxpool2d", "kernel_size": 3}, (1, 2, 2), name="pool")


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as info:
        build({"type": "conv2d", "filtrs": 4, "kernel_size": 3})
    message = str(info.value)
    # same wording as the CLI's pre-data check: the full key, then the closest valid full key
    assert message.startswith("model.layers.conv1.filtrs: unknown key for layer type 'conv2d'; "
                              "did you mean 'model.layers.conv1.filters'? (valid keys: bias, "
                              "dilation, filters, ")
    with pytest.raises(ConfigError, match=r"model\.layers\.r\.p: unknown key for layer type 'relu'"):
        build({"type": "relu", "p": 0.5}, name="r")


@pytest.mark.parametrize("value", ["abc", 3.5, True, [3]])
def test_wrong_type_names_key_value_and_expected_type(value):
    with pytest.raises(ConfigError, match=r"model.layers.conv1.filters: expected an integer, got "
                                          + repr(value).replace("[", r"\[").replace("]", r"\]")):
        build({"type": "conv2d", "filters": value, "kernel_size": 3})


@pytest.mark.parametrize("spec, key", [
    ({"type": "conv2d", "filters": 0, "kernel_size": 3}, "conv1.filters: must be >= 1"),
    ({"type": "conv2d", "filters": 2, "kernel_size": -1}, "conv1.kernel_size: must be >= 1"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "stride": 0}, "conv1.stride"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": -1}, "conv1.padding: must be >= 0"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "dilation": [1, 0]}, "conv1.dilation"),
    ({"type": "conv2d", "filters": 2}, "conv1.kernel_size: missing required key"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "full"}, "conv1.padding"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "padding": "same", "stride": 2},
     "conv1.padding: padding='same' needs stride 1"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "bias": "yes"}, "conv1.bias: expected true"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "trainable": 1}, "conv1.trainable"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "weight_decay_mult": -1},
     "conv1.weight_decay_mult: must be a number >= 0"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 3, "init": "he_normall"},
     "conv1.init: Unknown initializer 'he_normall'.*did you mean 'he_normal'"),
    ({"type": "conv2d", "filters": 2, "kernel_size": 5, "init": "sobel"},
     "conv1.init: filter bank 'sobel' needs a 3x3 kernel"),
    ({"type": "maxpool2d", "kernel_size": 3, "padding": 2}, "conv1.padding: padding 2 must be at most"),
    ({"type": "avgpool2d", "kernel_size": 2, "count_include_pad": "no"}, "conv1.count_include_pad"),
    ({"type": "leaky_relu", "negative_slope": "x"}, "conv1.negative_slope: expected a number"),
    ({"type": "batchnorm2d", "momentum": 2}, r"conv1.momentum: must be in \[0, 1\]"),
    ({"type": "batchnorm2d", "eps": 0}, "conv1.eps: must be > 0"),
    ({"type": "dense", "units": 0}, "conv1.units: must be >= 1"),
    ({"type": "gelu", "approximate": "tahn"},
     r"conv1.approximate: expected one of 'none', 'tanh', got 'tahn'; did you mean 'tanh'\?"),
    ({"type": "gelu", "approximate": 1}, "conv1.approximate: expected a name"),
    ({"type": "elu", "alpha": "x"}, "conv1.alpha: expected a number"),
    ({"type": "softmax", "dim": 2}, "conv1.dim: unknown key for layer type 'softmax'"),
    ({"type": "batchnorm1d", "momentum": -0.5}, r"conv1.momentum: must be in \[0, 1\]"),
    ({"type": "batchnorm1d", "eps": 0}, "conv1.eps: must be > 0"),
    ({"type": "dropout2d", "p": 1}, r"conv1.p: must be in \[0, 1\)"),
])
def test_bad_values_name_the_full_key(spec, key):
    input_shape = (8,) if spec["type"] in ("dense", "batchnorm1d") else (2, 8, 8)
    with pytest.raises(ConfigError, match="model.layers." + key):
        build(spec, input_shape)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "half", float("nan")])
def test_dropout_p_must_be_in_unit_interval(p):
    with pytest.raises(ConfigError, match=r"model.layers.drop1.p: "):
        build({"type": "dropout", "p": p}, (10,), name="drop1")


def test_dense_after_unflattened_output_asks_for_flatten():
    with pytest.raises(ConfigError, match=r"model.layers.fc1: dense expects a flat per-sample "
                                          r"input .* shape \(16, 5, 5\); add a `flatten` layer"):
        build({"type": "dense", "units": 10}, (16, 5, 5), name="fc1")


@pytest.mark.parametrize("spec, input_shape, message", [
    ({"type": "batchnorm1d"}, (16, 5, 5),
     r"model\.layers\.x: batchnorm1d expects a flat per-sample input \(features,\), got shape "
     r"\(16, 5, 5\); use batchnorm2d on \(C, H, W\) feature maps"),
    ({"type": "batchnorm2d"}, (400,),
     r"model\.layers\.x: batchnorm2d expects a per-sample input \(C, H, W\), got shape "
     r"\(400,\); use batchnorm1d after flatten or dense layers"),
    ({"type": "dropout2d"}, (400,),
     r"model\.layers\.x: dropout2d expects a per-sample input \(C, H, W\), got shape "
     r"\(400,\); use dropout after flatten or dense layers"),
])
def test_normalisation_and_dropout_on_the_wrong_rank_point_to_their_twin(spec, input_shape,
                                                                       message):
    with pytest.raises(ConfigError, match=message):
        build(spec, input_shape, name="x")


def test_conv_after_flatten_is_rejected():
    with pytest.raises(ConfigError, match=r"model.layers.conv1: conv2d expects .*\(C, H, W\).*\(400,\)"):
        build({"type": "conv2d", "filters": 2, "kernel_size": 3}, (400,))


def test_groups_must_divide_channels():
    with pytest.raises(ConfigError, match=r"model.layers.conv1.groups: 3 input channels "
                                          r"\(from input shape \(3, 8, 8\)\) are not divisible"):
        build({"type": "conv2d", "filters": 4, "kernel_size": 3, "groups": 2}, (3, 8, 8))
    with pytest.raises(ConfigError, match=r"model.layers.conv1.groups: 5 filters"):
        build({"type": "conv2d", "filters": 5, "kernel_size": 3, "groups": 2}, (4, 8, 8))


def test_missing_and_unknown_type():
    # one wording wherever it is caught (model build, pre-data check, Hydra composition)
    with pytest.raises(ConfigError, match=r"^model\.layers\.conv1\.type: missing \(known types: "
                                          r"(\w+, )*avgpool2d, (\w+, )*conv2d, "):
        build({"filters": 4})
    with pytest.raises(ConfigError, match=r"^model\.layers\.conv9\.type: Unknown layer type 'conv' "
                                          r"\(known types: (\w+, )*avgpool2d, .*\); did you mean 'conv2d'\?$"):
        build({"type": "conv"}, name="conv9")
    with pytest.raises(ConfigError, match=r"model.layers.conv1: expected a mapping"):
        build(5)


def test_registry_holds_every_documented_type():
    assert {"conv2d", "maxpool2d", "avgpool2d", "relu", "leaky_relu", "tanh", "sigmoid", "dense",
            "flatten", "dropout", "batchnorm2d", "batchnorm1d", "dropout2d", "gelu", "silu",
            "elu", "softmax"} <= set(LAYERS.names())


@pytest.mark.parametrize("layer_type", ["maxpool2d", "avgpool2d"])
def test_pool_padding_wider_than_half_the_kernel_names_the_key(layer_type):
    """The engine's rule (PyTorch's: a window must never hold padding only), reported at
    build time with the config key and both axes."""
    with pytest.raises(ConfigError, match=r"model\.layers\.pool1\.padding: padding \(1, 2\) "
                                          r"must be at most half the kernel size 3x3"):
        build({"type": layer_type, "kernel_size": 3, "padding": [1, 2]}, name="pool1")
    layer = build({"type": layer_type, "kernel_size": 3, "padding": [1, 1]}, name="pool1")
    assert layer.padding == (1, 1)
