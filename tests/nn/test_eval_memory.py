"""An evaluation pass keeps nothing for backward (issue #14's memory puzzle: a ResNet-20 run
at batch 128 peaked at 3.5 GB RSS, because the evaluation batch of 512 left every layer's cache
behind and grew every conv layer's buffers to that batch for good). The trainer's evaluation
(convtrain.training.metrics.evaluate) runs such passes."""
from __future__ import annotations

import re

import numpy as np
import pytest

from convtrain.errors import InternalError
from convtrain.nn.model import build_model
from convtrain.ops.losses import softmax_cross_entropy
from tests.nn.test_merge_copies import peak_bytes

CONV = {"type": "conv2d", "filters": 8, "kernel_size": 3, "padding": 1, "bias": False}
#: a residual graph: 4 conv layers whose im2col columns dominate the memory
RESIDUAL = {"layers": {
    "stem": {**CONV}, "bn": {"type": "batchnorm2d"}, "relu": {"type": "relu"},
    "a": {**CONV}, "a_relu": {"type": "relu"}, "b": {**CONV},
    "add": {"type": "add", "inputs": ["b", "relu"]}, "c": {**CONV},
    "pool": {"type": "global_avgpool2d"}, "fc": {"type": "dense", "units": 3}}}
SHAPE = (8, 16, 16)


def workspace_bytes(model):
    return sum(layer.workspace.nbytes for layer in model.layers.values()
               if hasattr(layer, "workspace"))


def train_step(model, n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *SHAPE), dtype=np.float32)
    _, dlogits = softmax_cross_entropy(model.forward(x), rng.integers(0, 3, n))
    model.backward(dlogits, input_grad=False)


def test_an_evaluation_pass_drops_every_cache_and_leaves_the_layer_buffers_alone():
    model = build_model(RESIDUAL, SHAPE, seed=0)
    train_step(model, 4)
    trained_buffers = workspace_bytes(model)
    x = np.random.default_rng(1).standard_normal((64, *SHAPE), dtype=np.float32)
    logits, peak = peak_bytes(lambda: model.forward(x, training=False))
    assert all(getattr(layer, "cache", None) is None for layer in model.layers.values())
    assert workspace_bytes(model) == trained_buffers  # not grown to the batch of 64
    # one layer's columns (+ their padded input) at a time, next to a few activations;
    # keeping every conv layer's columns would need 4x the columns
    columns = 8 * 9 * 64 * 18 * 16 * 4  # (C*kh*kw, N*L) float32, L up to (oh-1)*Wp + ow
    activation = 64 * 8 * 16 * 16 * 4
    assert peak < 1.5 * columns + 4 * activation
    # the same logits as a pass that keeps its caches
    kept = model.forward(x, training=False, keep_for_backward=True)
    np.testing.assert_array_equal(logits, kept)
    assert model.layers["c"].cache is not None


def test_backward_after_an_evaluation_pass_names_keep_for_backward():
    model = build_model(RESIDUAL, SHAPE, seed=0)
    x = np.random.default_rng(2).standard_normal((2, *SHAPE), dtype=np.float32)
    logits = model.forward(x, training=False)
    with pytest.raises(InternalError, match=re.escape("keep_for_backward=True")):
        model.backward(np.ones_like(logits))
    # gradients in inference mode (saliency maps) keep the caches on request
    logits = model.forward(x, training=False, keep_for_backward=True)
    dx = model.backward(np.ones_like(logits))
    assert dx.shape == x.shape and np.isfinite(dx).all()
    layer_outputs = model.layer_outputs(x, ["a"])  # pictures keep nothing either
    assert layer_outputs["a"].shape == (2, 8, 16, 16) and model.layers["a"].cache is None


def test_the_trainers_evaluation_keeps_nothing_and_grows_no_buffers():
    from convtrain.data.loader import iterate_batches
    from convtrain.data.splits import ArraySplit
    from convtrain.training.metrics import evaluate

    model = build_model(RESIDUAL, SHAPE, seed=0)
    train_step(model, 4)
    trained_buffers = workspace_bytes(model)
    rng = np.random.default_rng(3)
    split = ArraySplit(rng.standard_normal((40, *SHAPE), dtype=np.float32),
                       rng.integers(0, 3, 40))
    loss, accuracy = evaluate(model, split, 16, None, softmax_cross_entropy, iterate_batches)
    assert np.isfinite(loss) and 0 <= accuracy <= 1
    assert all(getattr(layer, "cache", None) is None for layer in model.layers.values())
    assert workspace_bytes(model) == trained_buffers
