"""The math of the response views (convtrain/visuals/responses.py) against independent
references: brute-force gradient footprints, finite differences in float64, exhaustive argmax
search, PyTorch autograd (Grad-CAM, saliency, bilinear resizing)."""
from __future__ import annotations

import numpy as np
import pytest

from convtrain.nn.model import build_model
from convtrain.visuals import responses as R

torch = pytest.importorskip("torch")

TINY = {"layers": {
    "conv1": {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
    "relu1": {"type": "relu"},
    "pool1": {"type": "avgpool2d", "kernel_size": 2},
    "conv2": {"type": "conv2d", "filters": 4, "kernel_size": 3, "stride": 2, "dilation": 2,
              "padding": 2},
    "relu2": {"type": "relu"},
    "conv3": {"type": "conv2d", "filters": 2, "kernel_size": 2},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "units": 5}}}


#: TINY without its ReLUs: every weight reaches the gradient, so footprints are whole windows
LINEAR = {"layers": {k: v for k, v in TINY["layers"].items() if v["type"] != "relu"}}


def tiny(dtype=np.float64, cfg=TINY, shape=(2, 13, 13), seed=1):
    return build_model(cfg, shape, seed=seed, dtype=dtype)


def unit_gradient(model, name, x, f, i, j):
    """d y[0, f, i, j] / d x through the layers up to ``name`` (the module's own walk)."""
    head, _ = R.split_at(model, name)
    y = R.run_forward(head, model.backend.asarray(x, dtype=model.dtype))
    dy = np.zeros(y.shape)
    dy[0, f, i, j] = 1.0
    return np.asarray(R.run_backward(head, dy))


SIDE = 25  # big enough for windows that lie inside the image


@pytest.mark.parametrize("name", ["conv1", "pool1", "conv2", "conv3"])
def test_receptive_field_is_the_gradient_footprint(name):
    model = tiny(cfg=LINEAR, shape=(2, SIDE, SIDE))
    window = R.receptive_field(model, name)
    _, oh, ow = model.layer_shapes[name][1]
    x = np.random.default_rng(0).normal(size=(1, 2, SIDE, SIDE))
    inner = 0
    for i in range(oh):
        for j in range(ow):
            footprint = np.abs(unit_gradient(model, name, x, 0, i, j)[0]).sum(axis=0) > 0
            top, left = window.rows_cols(i, j)
            inside = np.zeros((SIDE, SIDE), bool)
            inside[max(top, 0):top + window.size[0], max(left, 0):left + window.size[1]] = True
            assert not np.any(footprint & ~inside), (i, j)  # nothing outside the window
            if top >= 0 and left >= 0 and top + window.size[0] <= SIDE \
                    and left + window.size[1] <= SIDE:
                # a window inside the image: its corners are reached (dilated kernels leave
                # holes inside it), so it is the footprint's bounding box exactly
                rows, cols = np.nonzero(footprint)
                assert (rows.min(), rows.max(), cols.min(), cols.max()) == (
                    top, top + window.size[0] - 1, left, left + window.size[1] - 1)
                inner += 1
    assert inner > 0


def test_receptive_field_formula_values():
    # conv1 3x3 p1: size 3, start -1; pool 2: size 4, jump 2; conv2 3x3 d2 s2 p2:
    # size 4 + 4*2 = 12, start -1 - 2*2 = -5, jump 4; conv3 2x2: size 12 + 4 = 16, jump 4
    model = tiny()
    assert R.receptive_field(model, "conv1") == R.Window((3, 3), (1, 1), (-1, -1))
    assert R.receptive_field(model, "pool1") == R.Window((4, 4), (2, 2), (-1, -1))
    assert R.receptive_field(model, "conv2") == R.Window((12, 12), (4, 4), (-5, -5))
    assert R.receptive_field(model, "conv3") == R.Window((16, 16), (4, 4), (-5, -5))
    # summary() computes the same size by its own recurrence
    rows = {row["name"]: row for row in model.summary_rows()}
    for name in ("conv1", "pool1", "conv2", "conv3"):
        assert R.receptive_field(model, name).size == rows[name]["receptive_field"]


def test_unit_gradient_matches_finite_differences():
    model = tiny()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2, 13, 13))
    filters = np.array([1, 3, 0])
    value, grad = R.unit_input_gradient(model, "conv2", x, filters)
    eps = 1e-6
    for index in [(0, 0, 4, 5), (1, 1, 6, 6), (2, 0, 8, 3), (1, 0, 0, 0)]:
        up, down = x.copy(), x.copy()
        up[index] += eps
        down[index] -= eps
        numeric = (R.unit_input_gradient(model, "conv2", up, filters)[0]
                   - R.unit_input_gradient(model, "conv2", down, filters)[0]) / (2 * eps)
        assert numeric[index[0]] == pytest.approx(grad[index], rel=1e-6, abs=1e-9)
    # the value is the layer's output at the centre position
    out = np.asarray(model.layer_outputs(x, ["conv2"])["conv2"])
    i, j = R.centre(out.shape)
    np.testing.assert_allclose(value, out[np.arange(3), filters, i, j])


def test_gradient_ascent_increases_each_filters_activation():
    model = tiny(np.float32)
    # negative first-layer biases, as training often leaves them: a faint start image closes
    # every ReLU and its gradient is exactly 0 (the start is of the data's scale for that)
    model.layers["conv1"].params["bias"][...] = -0.5
    settings = R.AscentSettings(steps=32)
    start = np.random.default_rng(settings.seed).normal(0.0, 1.0, (4, 2, 13, 13))
    images = R.activation_maximisation(model, "conv2", settings)
    assert images.shape == (4, 2, 13, 13)
    before = R.centre_outputs(model, "conv2", start.astype(np.float32)).diagonal()
    after = R.centre_outputs(model, "conv2", images).diagonal()
    assert np.all(after > before + 1.0), (before, after)
    # each image excites its own filter more than the other filters' images do (relative to
    # the image's size: every image ends up at a similar norm)
    assert np.all(np.argmax(R.centre_outputs(model, "conv2", images), axis=0) == np.arange(4))
    # deterministic: same settings, same pictures; the layers' gradients are left as they were
    model.layers["conv1"].grads["weight"][...] = 7.0
    np.testing.assert_array_equal(R.activation_maximisation(model, "conv2", settings), images)
    assert np.all(model.layers["conv1"].grads["weight"] == 7.0)


def test_first_layer_ascent_draws_the_filter():
    # one linear filter: the unit's gradient is the filter itself, so the crop of its receptive
    # field converges to a positive multiple of the weights (a 3x3 window is neither jittered
    # nor blurred: R.MIN_SMOOTHED_WINDOW)
    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 2, "kernel_size": 3},
                      "flat": {"type": "flatten"}, "fc": {"type": "dense", "units": 2}}}
    model = build_model(cfg, (1, 9, 9), seed=0, dtype=np.float64)
    images = R.activation_maximisation(model, "conv1", R.AscentSettings(
        steps=500, clip=100.0))
    top, left, size = R.centre_window(model, "conv1")
    weight = np.asarray(model.layers["conv1"].params["weight"])
    for f in range(2):
        patch = R.crop(images[f], top, left, size)[0]
        np.testing.assert_allclose(patch / np.abs(patch).mean(),
                                   weight[f, 0] / np.abs(weight[f, 0]).mean(), rtol=1e-4)


def test_top_patches_are_the_argmax_windows():
    model = tiny()
    rng = np.random.default_rng(5)
    images = rng.normal(size=(9, 2, 13, 13))
    found = R.top_patches(model, "conv2", images, k=4, batch_size=4)
    window = R.receptive_field(model, "conv2")
    out = np.asarray(model.layer_outputs(images, ["conv2"])["conv2"])  # (9, 4, 3, 3)
    oh, ow = out.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (20, 20), (20, 20)))
    for f in range(4):
        best = {}
        for n in range(9):  # exhaustive: every image's strongest position
            flat = [(out[n, f, i, j], -(i * ow + j), i, j) for i in range(oh) for j in range(ow)]
            value, _, i, j = max(flat)
            best[n] = (value, i, j)
        ranking = sorted(best, key=lambda n: (-best[n][0], n))[:4]
        assert list(found.images[f]) == ranking
        for rank, n in enumerate(ranking):
            value, i, j = best[n]
            assert found.values[f, rank] == pytest.approx(value)
            assert tuple(found.positions[f, rank]) == (i, j)
            top, left = window.start[0] + i * window.jump[0], window.start[1] + j * window.jump[1]
            expected = padded[n, :, 20 + top:20 + top + window.size[0],
                              20 + left:20 + left + window.size[1]]
            np.testing.assert_array_equal(found.crops[f, rank], expected)
            inside = np.zeros((13 + 40, 13 + 40), bool)
            inside[20:33, 20:33] = True
            np.testing.assert_array_equal(
                found.inside[f, rank],
                inside[20 + top:20 + top + window.size[0], 20 + left:20 + left + window.size[1]])
    assert R.top_patches(model, "conv2", images[:2], k=5).images.shape == (4, 2)  # k <= N


# --- saliency and Grad-CAM against PyTorch ---------------------------------------------------
CAM_NET = {"layers": {
    "conv1": {"type": "conv2d", "filters": 4, "kernel_size": 3, "padding": 1},
    "relu1": {"type": "relu"},
    "pool1": {"type": "maxpool2d", "kernel_size": 2},
    "conv2": {"type": "conv2d", "filters": 5, "kernel_size": 3, "padding": 1},
    "relu2": {"type": "relu"},
    "flat": {"type": "flatten"},
    "fc": {"type": "dense", "units": 3}}}


def torch_net(model):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(5 * 5 * 5, 3)).double()
    state = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in model.state_dict().items()}
    net.load_state_dict({"0.weight": state["conv1.weight"], "0.bias": state["conv1.bias"],
                         "3.weight": state["conv2.weight"], "3.bias": state["conv2.bias"],
                         "6.weight": state["fc.weight"], "6.bias": state["fc.bias"]})
    return net


def test_grad_cam_and_saliency_match_torch():
    model = tiny(cfg=CAM_NET, shape=(2, 10, 10), seed=4)
    x = np.random.default_rng(6).normal(size=(3, 2, 10, 10))
    classes = np.array([2, 0, 1])
    assert R.grad_cam_layer(model) == "relu2"
    cams, maps = R.grad_cam(model, x, classes)

    net = torch_net(model)
    inputs = torch.from_numpy(x).requires_grad_(True)
    activations = net[:5](inputs)  # the output of relu2
    activations.retain_grad()
    logits = net[5:](activations)
    logits[torch.arange(3), torch.from_numpy(classes)].sum().backward()
    alpha = activations.grad.mean(dim=(2, 3), keepdim=True)
    expected = torch.relu((alpha * activations).sum(dim=1))
    np.testing.assert_allclose(cams, expected.detach().numpy(), rtol=1e-9, atol=1e-12)
    upsampled = torch.nn.functional.interpolate(expected[:, None], size=(10, 10),
                                                mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(maps, upsampled.detach().numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(R.saliency(model, x, classes),
                               inputs.grad.abs().amax(dim=1).numpy(), rtol=1e-9, atol=1e-12)


def test_grad_cam_weights_are_the_mean_gradient_by_finite_differences():
    # alpha_k = mean over positions of d logit_c / d A_k, from perturbing A directly
    model = tiny(cfg=CAM_NET, shape=(2, 10, 10), seed=4)
    x = np.random.default_rng(7).normal(size=(1, 2, 10, 10))
    head, tail = R.split_at(model, "relu2")
    a = np.array(R.run_forward(head, x), copy=True)
    eps = 1e-6
    numeric = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        up, down = a.copy(), a.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (R.run_forward(tail, up)[0, 1] - R.run_forward(tail, down)[0, 1]) / (2 * eps)
    alpha = numeric.mean(axis=(2, 3), keepdims=True)
    expected = np.maximum((alpha * a).sum(axis=1), 0)
    cams, _ = R.grad_cam(model, x, [1], "relu2")
    np.testing.assert_allclose(cams, expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("size", "out"), [((3, 5), (10, 7)), ((4, 4), (2, 3)), ((1, 2), (5, 5))])
def test_resize_bilinear_matches_torch(size, out):
    maps = np.random.default_rng(8).normal(size=(2,) + size)
    expected = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], size=out,
                                               mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(R.resize_bilinear(maps, out), expected.numpy(), rtol=1e-12)


def test_gaussian_blur_matches_scipy():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(9).normal(size=(2, 1, 9, 11))
    # radius ceil(2 sigma) = 2 taps each side; scipy's truncate = radius / sigma; "reflect" in
    # NumPy's sense (edge not repeated) is scipy's "mirror"
    expected = ndimage.gaussian_filter(x, sigma=(0, 0, 0.8, 0.8), truncate=2 / 0.8,
                                       mode="mirror")
    np.testing.assert_allclose(R.gaussian_blur(x, 0.8), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shift", [(0, 0), (1, -1), (-2, 5), (13, 3)])
def test_roll_matches_numpy(shift):
    x = np.arange(2 * 1 * 4 * 5).reshape(2, 1, 4, 5)
    np.testing.assert_array_equal(R.roll(np, x, shift), np.roll(x, shift, axis=(2, 3)))


def test_graph_models_are_refused_with_a_reason():
    model = tiny()
    model.is_chain = False  # what a graph model says of itself
    with pytest.raises(R.NotAChain, match="graph"):
        R.split_at(model, "conv1")
