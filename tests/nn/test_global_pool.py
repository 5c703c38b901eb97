"""The ``global_avgpool2d`` layer: through the layer API (float64 finite differences, PyTorch),
from YAML (build_model, summary, bad keys), and a short training run from the command line."""
import json
from collections import OrderedDict

import numpy as np
import pytest

import convtrain
from convtrain.errors import ConfigError, InternalError
from convtrain.layers import GlobalAvgPool2d
from convtrain.nn import build_layer
from tests.app.test_cli import convtrain as run_cli, run_dirs
from tests.gradcheck import check_gradients, projected_sum

GAP_MODEL = {"name": "gap", "layers": {
    "conv1": {"type": "conv2d", "filters": 6, "kernel_size": 3, "padding": 1},
    "relu1": {"type": "relu"},
    "gap": {"type": "global_avgpool2d"},
    "fc": {"type": "dense", "units": 4},
}}


def test_layer_gradient_matches_finite_differences():
    layer = GlobalAvgPool2d()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 4))
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    check_gradients(lambda: projected_sum(layer.forward(x), dy), {"x": x}, {"x": dx}, tol=1e-7)
    assert layer.output_shape((3, 5, 4)) == (3,) and layer.params == {}


def test_backward_before_forward_is_an_internal_error():
    with pytest.raises(InternalError, match=r"layer 'globalavgpool2d': backward\(\) called before"):
        GlobalAvgPool2d().backward(np.zeros((2, 3)))


def test_model_with_global_pooling_equals_torch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = convtrain.build_model(GAP_MODEL, (2, 7, 6), seed=1, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((3, 2, 7, 6))
    reference = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(2, 6, 3, padding=1), relu1=nn.ReLU(),
        gap=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), fc=nn.Linear(6, 4))).double()
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    dlogits = np.random.default_rng(2).standard_normal((3, 4))
    ty.backward(torch.tensor(dlogits))
    np.testing.assert_allclose(model.forward(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.backward(dlogits), tx.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_summary_counts_flops_and_sees_the_whole_input():
    model = convtrain.build_model(GAP_MODEL, (2, 7, 6))
    rows = {row["name"]: row for row in model.summary_rows()}
    assert rows["gap"]["output_shape"] == (6,) and rows["gap"]["params"] == 0
    assert rows["gap"]["flops"] == 6 * 7 * 6 + 6
    assert rows["relu1"]["receptive_field"] == (3, 3)
    assert rows["gap"]["receptive_field"] == (7, 6) and rows["gap"]["whole_input"]
    assert rows["fc"]["receptive_field"] == (7, 6)
    line = [l for l in model.summary().splitlines() if l.startswith("gap ")][0]
    assert "global_avgpool2d" in line and line.endswith("7x6 (all)")


def test_yaml_mistakes_name_the_key():
    defaults = {"init": "he_normal", "rng": np.random.default_rng(0), "dtype": np.float32}
    with pytest.raises(ConfigError, match=r"^model\.layers\.gap\.kernel_size: unknown key for "
                                          r"layer type 'global_avgpool2d' \(valid keys: none\)$"):
        build_layer("gap", {"type": "global_avgpool2d", "kernel_size": 2}, (3, 4, 4), defaults)
    with pytest.raises(ConfigError, match=r"^model\.layers\.gap\.type: Unknown layer type "
                                          r"'global_avgpool' .*did you mean 'global_avgpool2d'\?$"):
        build_layer("gap", {"type": "global_avgpool"}, (3, 4, 4), defaults)
    with pytest.raises(ConfigError, match=r"^model\.layers\.gap: global_avgpool2d expects a "
                                          r"per-sample input \(C, H, W\), got shape \(12,\)"):
        build_layer("gap", {"type": "global_avgpool2d"}, (12,), defaults)


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_summary_and_training_from_the_command_line(tmp_path):
    # the default small_cnn with its flatten replaced by global average pooling
    overrides = ("+model.layers.gap={type: global_avgpool2d, before: fc1}", "~model.layers.flat")
    proc = run_cli(tmp_path, *overrides, "task=summary")
    assert [l for l in proc.stdout.splitlines() if l.startswith("gap ")][0].split()[:3] == [
        "gap", "global_avgpool2d", "32"]
    proc = run_cli(tmp_path, *overrides, "trainer.max_epochs=3", "seed=0")
    [run] = run_dirs(tmp_path / "outputs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 3
    assert metrics["test_accuracy"] > 0.6  # 10 classes: chance is 0.1 (0.89 measured)
    bad = run_cli(tmp_path, "+model.layers.gap={type: global_avgpool2d, kernel: 2, before: fc1}",
                  "~model.layers.flat", "task=summary", check=False)
    assert bad.returncode == 2
    assert ("convtrain: error: model.layers.gap.kernel: unknown key for layer type "
            "'global_avgpool2d'") in bad.stderr
