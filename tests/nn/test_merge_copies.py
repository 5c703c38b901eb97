"""The merge layers and the graph executor copy nothing the math does not need (issue #14):
``add`` forward one output, backward the same ``dy`` for every input; ``concat`` forward one
output, backward views of ``dy``; ``identity`` nothing; the gradient of a layer read by several
others summed into one new array. Bytes are counted with tracemalloc (NumPy reports its data
allocations to it), against bounds derived from the shapes."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from convtrain.nn import LAYERS
from convtrain.nn.layers.merge import Add, Concat, Identity
from convtrain.nn.model import build_model
from convtrain.ops.losses import softmax_cross_entropy
from tests.nn.test_graph import GRAPH, _smallest_spec

SHAPE = (8, 16, 16, 16)  # (N, C, H, W) float32: 128 KiB per array
SLACK = 4096  # bytes of Python objects (lists, views) around the arrays


def peak_bytes(fn):
    """``(result, bytes)``: the peak of memory allocated while ``fn()`` runs, above what was
    allocated before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return result, peak


def arrays(count, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]


def test_add_allocates_its_output_once_and_hands_the_same_dy_to_every_input():
    xs = arrays(3)
    add = Add().build([SHAPE[1:]] * 3)
    y, forward = peak_bytes(lambda: add.forward(xs))
    np.testing.assert_array_equal(y, xs[0] + xs[1] + xs[2])
    assert forward <= y.nbytes + SLACK  # one output; a temporary per extra input would be 2x
    dy = arrays(1, seed=1)[0]
    grads, backward = peak_bytes(lambda: add.backward(dy))
    assert all(g is dy for g in grads) and backward <= SLACK


def test_concat_allocates_its_output_once_and_returns_views_of_dy():
    xs = arrays(2) + arrays(1, (8, 4, 16, 16), seed=2)
    cat = Concat().build([x.shape[1:] for x in xs])
    y, forward = peak_bytes(lambda: cat.forward(xs))
    assert forward <= y.nbytes + SLACK
    dy = arrays(1, y.shape, seed=3)[0]
    grads, backward = peak_bytes(lambda: cat.backward(dy))
    assert backward <= SLACK  # a copy per input would be dy.nbytes
    assert all(np.shares_memory(g, dy) for g in grads)
    np.testing.assert_array_equal(np.concatenate(grads, axis=1), dy)


def test_identity_passes_arrays_on():
    x, dy = arrays(2)
    identity = Identity().build(SHAPE[1:])
    assert identity.forward(x) is x and identity.backward(dy) is dy


def test_gradients_of_a_layer_read_three_times_are_summed_into_one_new_array():
    model = build_model({"layers": {"same": {"type": "identity"},
                                    "sum": {"type": "add", "inputs": ["same"] * 3}}},
                        SHAPE[1:])
    (x,) = arrays(1)
    model.forward(x)
    dy = arrays(1, seed=4)[0]
    before = dy.copy()
    dx, peak = peak_bytes(lambda: model.backward(dy))
    # dy arrives as is, the second arrival makes one new array, the third adds into it
    assert peak <= dy.nbytes + SLACK
    np.testing.assert_array_equal(dx, before + before + before)
    np.testing.assert_array_equal(dy, before)  # the received dy is never written into
    assert not np.shares_memory(dx, dy)


@pytest.mark.parametrize("type_name", [t for t in LAYERS.names()
                                       if not LAYERS.get(t).merges_inputs])
def test_no_layer_writes_into_a_float32_gradient(type_name):
    """The aliasing rule ``add``'s backward relies on, on the float32 speed paths (the float64
    case: tests/nn/test_graph.py), with ``dy`` a strided view as ``concat`` hands on."""
    layer_cls = LAYERS.get(type_name)
    shape = (12,) if layer_cls.input_rank == 1 else (3, 6, 6)
    model = build_model({"layers": {"x": _smallest_spec(layer_cls)}}, shape)
    layer = model.layers["x"]
    x = np.random.default_rng(2).standard_normal((4, *shape), dtype=np.float32)
    y = layer.forward(x, training=True)
    wide = np.random.default_rng(3).standard_normal((y.shape[0], 2 * y.shape[1], *y.shape[2:]),
                                                    dtype=np.float32)
    for dy in (wide[:, :y.shape[1]].copy(), wide[:, y.shape[1]:]):  # contiguous, then a view
        layer.forward(x, training=True)
        before = dy.copy()
        layer.backward(dy)
        np.testing.assert_array_equal(dy, before)


def test_concat_views_give_the_gradients_of_contiguous_copies_on_the_float32_paths(monkeypatch):
    model = build_model(GRAPH, (2, 8, 8), seed=1)
    rng = np.random.default_rng(5)
    x, labels = rng.standard_normal((4, 2, 8, 8), dtype=np.float32), np.array([0, 1, 2, 0])

    def gradients():
        _, dlogits = softmax_cross_entropy(model.forward(x), labels)
        dx = model.backward(dlogits)
        return [dx] + [layer.grads[k].copy() for layer in model.layers.values()
                       for k in layer.grads]

    views = gradients()

    def copying_backward(self, dy):  # the copies concat made before
        sizes, self.cache = self.cache, None
        starts = np.cumsum((0,) + sizes)
        return [np.ascontiguousarray(dy[:, a:b]) for a, b in zip(starts[:-1], starts[1:])]

    monkeypatch.setattr(Concat, "backward", copying_backward)
    copies = gradients()
    for a, b in zip(views, copies):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
