"""convtrain on the strict CuPy stand-in (tests/strict_cupy): every layer, a training run of
the default config through the app's own path, resume across backends, TensorBoard and
checkpoints. CI has no GPU; this is where the CuPy code path runs. tests/test_gpu.py repeats
the NumPy-vs-CuPy comparison on real CuPy where a GPU exists."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from safetensors.numpy import load_file

from convtrain.app.cli import config_dir
from convtrain.app.run import run
from convtrain.app.schema import register_configs
from convtrain.errors import ConfigError
from convtrain.nn.model import build_model
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.runtime.backend import get_backend
from convtrain.training.metrics import count_correct
from convtrain.training.resume import _restore_layer_rngs, _set_rng_state

EVERY_LAYER = {"layers": {
    "conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": "same"},
    "bn1": {"type": "batchnorm2d"}, "relu1": {"type": "relu"},
    "pool1": {"type": "maxpool2d", "kernel_size": 2},
    "conv2": {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "padding": 1,
              "groups": 2},
    "leaky": {"type": "leaky_relu", "negative_slope": 0.1},
    "conv3": {"type": "conv2d", "filters": 6, "kernel_size": 3, "dilation": 2, "padding": 2},
    "tanh": {"type": "tanh"},
    "pool2": {"type": "avgpool2d", "kernel_size": 3, "stride": 1, "padding": 1,
              "count_include_pad": False},
    "pool3": {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1},
    "flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 12},
    "sig": {"type": "sigmoid"}, "drop": {"type": "dropout", "p": 0.3},
    "fc2": {"type": "dense", "units": 5}}}
SHAPE = (3, 10, 10)


def forward_backward(backend_name: str, training: bool):
    backend = get_backend(backend_name)
    model = build_model(EVERY_LAYER, SHAPE, seed=1, dtype=np.float64, backend=backend)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, *SHAPE)), rng.integers(0, 5, 6)
    logits = model.forward(backend.asarray(x), training=training, keep_for_backward=True)
    loss, dlogits = softmax_cross_entropy(logits, backend.asarray(y))
    dx = model.backward(dlogits)
    grads = {f"{name}.{key}": backend.to_numpy(layer.grads[key])
             for name, layer in model.layers.items() for key in layer.grads}
    return model, backend.to_numpy(logits), float(loss), backend.to_numpy(dx), grads


def test_every_layer_type_runs_forward_and_backward_like_numpy(strict_cupy):
    # eval mode: dropout is the identity, so both backends compute the same function
    cpu = forward_backward("numpy", training=False)
    gpu = forward_backward("cupy", training=False)
    assert type(gpu[0].layers["conv1"].params["weight"]) is strict_cupy.ndarray
    np.testing.assert_allclose(gpu[1], cpu[1], rtol=1e-10, atol=1e-12)
    assert gpu[2] == pytest.approx(cpu[2], rel=1e-12)
    np.testing.assert_allclose(gpu[3], cpu[3], rtol=1e-9, atol=1e-12)
    assert gpu[4].keys() == cpu[4].keys() and gpu[4]
    for key, grad in cpu[4].items():
        np.testing.assert_allclose(gpu[4][key], grad, rtol=1e-9, atol=1e-12, err_msg=key)


def test_training_mode_with_dropout_and_batch_norm_runs_on_the_device(strict_cupy):
    model, logits, loss, dx, grads = forward_backward("cupy", training=True)
    assert np.isfinite(loss) and dx.shape == (6, *SHAPE)
    assert all(np.isfinite(g).all() for g in grads.values())
    assert isinstance(model.layers["drop"].rng, np.random.Generator)  # the saveable state


def test_models_move_between_backends_and_load_device_state(strict_cupy):
    model = build_model(EVERY_LAYER, SHAPE, seed=1, dtype=np.float64)
    expected = model.state_dict()
    model.to_backend("cupy")
    device_state = {k: strict_cupy.asarray(v) for k, v in expected.items()}
    model.load_state_dict(device_state)  # device arrays in a state dict are accepted
    assert type(model.layers["bn1"].buffers["running_var"]) is strict_cupy.ndarray
    model.to_backend("numpy")
    for layer in model.layers.values():
        for store in (layer.params, layer.grads, layer.buffers):
            assert all(isinstance(v, np.ndarray) for v in store.values())
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    backend = get_backend("numpy")
    assert isinstance(backend.to_numpy(strict_cupy.ones(3)), np.ndarray)
    assert isinstance(backend.asarray(strict_cupy.ones(3)), np.ndarray)


@pytest.mark.parametrize("where", ["device logits, host labels", "host logits, device labels",
                                   "both on the device"])
def test_count_correct_mixes_backends(strict_cupy, where):
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    labels = np.array([1, 1, 1])
    if where != "host logits, device labels":
        logits = strict_cupy.asarray(logits)
    if where != "device logits, host labels":
        labels = strict_cupy.asarray(labels)
    assert count_correct(logits, labels) == 2


def test_a_cupy_generator_state_is_not_restored_silently(strict_cupy, caplog):
    saved = np.random.default_rng(0).bit_generator.state
    model = SimpleNamespace(layers={"d": SimpleNamespace(rng=strict_cupy.random.default_rng(0))})
    with caplog.at_level(logging.WARNING):
        _restore_layer_rngs(model, {"d": saved}, "resume 'x'")
    assert "layer 'd' draws with a Generator rng, which cannot take the saved NumPy" in caplog.text
    with pytest.raises(ConfigError, match="does not fit its NumPy PCG64 generator"):
        _set_rng_state(np.random.default_rng(0), {"bit_generator": "MT19937"}, "resume 'x': the")


# --- the app's own path: compose the default config, then convtrain.app.run.run ---------------
TINY = ["data.subset=120", "trainer.batch_size=16", "logger.png=true"]


def train(run_dir: Path, *overrides: str) -> dict:
    register_configs()
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    run(cfg, run_dir=run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def test_default_config_trains_on_cupy_like_numpy(strict_cupy, tmp_path):
    # without dropout both backends compute the same numbers (up to float rounding)
    cpu = train(tmp_path / "cpu", "trainer.max_epochs=2", "model.layers.drop1=null")
    gpu = train(tmp_path / "gpu", "trainer.max_epochs=2", "model.layers.drop1=null",
                "backend=cupy")
    assert gpu["backend"] == "cupy" and cpu["backend"] == "numpy"
    for key in ("train_loss", "val_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert gpu[key] == pytest.approx(cpu[key], rel=1e-4, abs=1e-6), key
    cpu_ckpt = load_file(str(tmp_path / "cpu" / "checkpoints" / "last.safetensors"))
    gpu_ckpt = load_file(str(tmp_path / "gpu" / "checkpoints" / "last.safetensors"))
    assert cpu_ckpt.keys() == gpu_ckpt.keys()
    for key, value in cpu_ckpt.items():
        np.testing.assert_allclose(gpu_ckpt[key], value, rtol=1e-3, atol=1e-5, err_msg=key)
    # TensorBoard and the PNGs hold the same records as on NumPy, drawn from device arrays
    cpu_tb, gpu_tb = (event_records(tmp_path / side / "tensorboard") for side in ("cpu", "gpu"))
    assert gpu_tb["tags"] == cpu_tb["tags"]
    assert {"kernels/conv1", "feature_maps/conv1", "histograms/conv1/weight",
            "train:epoch/loss", "predictions/confusion_matrix"} \
        <= set().union(*gpu_tb["tags"].values())
    for tag in ("train:epoch/loss", "val:epoch/accuracy"):
        np.testing.assert_allclose(gpu_tb["scalars"][tag], cpu_tb["scalars"][tag], rtol=1e-4)
    pngs = {side: sorted(p.relative_to(tmp_path / side) for p in
                         (tmp_path / side / "images").rglob("*.png")) for side in ("cpu", "gpu")}
    assert pngs["gpu"] and pngs["gpu"] == pngs["cpu"]


def event_records(logdir: Path) -> dict:
    """Tags by kind and the values of each scalar tag, read back as TensorBoard does, from the
    run ``logdir/run`` and its split runs (their tags as ``<split>:<tag>``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags: dict[str, set] = {kind: set() for kind in ("scalars", "images", "histograms")}
    scalars = {}
    for split in ("", "train", "val", "test"):
        acc = EventAccumulator(str(logdir / "run" / split),
                               size_guidance={"scalars": 0, "images": 0, "histograms": 0})
        acc.Reload()
        prefix = f"{split}:" if split else ""
        for kind in tags:
            tags[kind] |= {prefix + tag for tag in acc.Tags()[kind]}
        scalars.update({prefix + tag: [e.value for e in acc.Scalars(tag)]
                        for tag in acc.Tags()["scalars"]})
    return {"tags": tags, "scalars": scalars}


def dropout_state(run_dir: Path) -> dict:
    meta = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    return meta["rng"]["layers"]["drop1"]


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_cupy_run_with_dropout_resumes_exactly(strict_cupy, tmp_path):
    whole = train(tmp_path / "whole", "backend=cupy", "trainer.max_epochs=2")
    train(tmp_path / "first", "backend=cupy", "trainer.max_epochs=1")
    assert dropout_state(tmp_path / "first")["bit_generator"] == "PCG64"  # saved on CuPy too
    resumed = train(tmp_path / "resumed", "backend=cupy", "trainer.max_epochs=2",
                    f"trainer.resume={tmp_path / 'first' / 'checkpoints' / 'last.safetensors'}")
    assert resumed["epochs_completed"] == 2
    for key in ("train_loss", "val_loss", "test_loss"):
        assert resumed[key] == whole[key], key  # same masks after the resume
    assert dropout_state(tmp_path / "resumed") == dropout_state(tmp_path / "whole")


def test_numpy_checkpoint_with_dropout_resumes_under_cupy(strict_cupy, tmp_path):
    train(tmp_path / "cpu", "trainer.max_epochs=1")
    saved = dropout_state(tmp_path / "cpu")
    resumed = train(tmp_path / "gpu", "backend=cupy", "trainer.max_epochs=2",
                    f"trainer.resume={tmp_path / 'cpu' / 'checkpoints' / 'last.safetensors'}")
    assert resumed["epochs_completed"] == 2 and resumed["backend"] == "cupy"
    assert np.isfinite(resumed["train_loss"])
    assert dropout_state(tmp_path / "gpu") != saved  # the restored stream went on drawing
    # and back: the CuPy checkpoint resumes on NumPy
    back = train(tmp_path / "back", "trainer.max_epochs=3",
                 f"trainer.resume={tmp_path / 'gpu' / 'checkpoints' / 'last.safetensors'}")
    assert back["epochs_completed"] == 3


def test_dropout_masks_on_the_device_follow_the_host_rng_state(strict_cupy):
    from convtrain.layers import Dropout

    backend = get_backend("cupy")
    layer = Dropout(0.5, seed=3)
    layer.to_backend(backend)
    x = strict_cupy.ones((4, 8))
    state = layer.rng.bit_generator.state
    first = backend.to_numpy(layer.forward(x))
    assert set(np.unique(first)) == {0.0, 2.0}
    assert not np.array_equal(backend.to_numpy(layer.forward(x)), first)
    layer.rng.bit_generator.state = state  # what a resume does
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), first)
