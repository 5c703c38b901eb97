"""The CuPy backend end to end: the same model, data and seed on NumPy and on the GPU.

Skipped without CuPy and a CUDA device (CI has none); run on a GPU machine with
``python -m pytest -q -m gpu``.
"""
from __future__ import annotations

import numpy as np
import pytest

from convtrain.runtime.backend import cupy_available, get_backend
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.nn.model import build_model
from convtrain.optim import build_optimizer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")]

CONFIG = {"layers": {
    "conv1": {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": "same"},
    "bn1": {"type": "batchnorm2d"}, "relu1": {"type": "relu"},
    "pool1": {"type": "maxpool2d", "kernel_size": 2},
    "conv2": {"type": "conv2d", "filters": 8, "kernel_size": 3, "stride": 2, "padding": 1},
    "relu2": {"type": "relu"}, "pool2": {"type": "avgpool2d", "kernel_size": 2},
    "flat": {"type": "flatten"}, "fc1": {"type": "dense", "units": 10}}}


def train_steps(backend_name: str, steps: int = 3) -> tuple[list[float], dict]:
    backend = get_backend(backend_name)
    model = build_model(CONFIG, (3, 16, 16), seed=0, dtype=np.float64, backend=backend)
    opt = build_optimizer({"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}, model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 16, 16))
    y = rng.integers(0, 10, 8)
    losses = []
    for _ in range(steps):
        logits = model.forward(backend.asarray(x))
        loss, dlogits = softmax_cross_entropy(logits, backend.asarray(y))
        model.backward(dlogits)
        opt.step()
        losses.append(float(loss))
    return losses, model.state_dict()


def test_cupy_training_matches_numpy():
    cpu_losses, cpu_state = train_steps("numpy")
    gpu_losses, gpu_state = train_steps("cupy")
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-9)
    for key, value in cpu_state.items():
        assert isinstance(gpu_state[key], np.ndarray)  # state_dict is always host arrays
        np.testing.assert_allclose(gpu_state[key], value, rtol=1e-7, atol=1e-10, err_msg=key)


def test_dropout_masks_on_the_gpu_follow_the_host_rng_state():
    """The dropout rng state a checkpoint saves (a host NumPy Generator) decides the device
    masks: restoring it repeats them (tests/test_strict_cupy.py runs the same on the stand-in)."""
    from convtrain.layers import Dropout

    backend = get_backend("cupy")
    layer = Dropout(0.5, seed=3)
    layer.to_backend(backend)
    x = backend.xp.ones((4, 8), dtype=np.float32)
    state = layer.rng.bit_generator.state
    first = backend.to_numpy(layer.forward(x))
    assert set(np.unique(first)) == {0.0, 2.0}
    layer.rng.bit_generator.state = state
    np.testing.assert_array_equal(backend.to_numpy(layer.forward(x)), first)
