"""benchmarks/: the ResNet-20 case compares like with like (the torch network of
bench_worker.py computes what configs/model/resnet20.yaml computes, from the same weights), and
the driver runs the case end to end with tiny settings (issue #14)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convtrain
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.optim import build_optimizer

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_worker():
    sys.path.insert(0, str(BENCHMARKS))  # the worker imports bench_cases as its sibling
    try:
        import bench_worker
        yield bench_worker
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture
def torch_one_thread():
    """torch on one thread for this test: two OpenMP threads on a busy 2-core machine spin
    (2 s a ResNet-20 step of 8 images against 0.2 s on one)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


@pytest.mark.slow  # ~3 s: composing the config (Hydra) and two steps on each side
def test_the_torch_resnet20_trains_like_the_shipped_config(bench_worker, torch_one_thread):
    torch = torch_one_thread
    side = bench_worker.TorchSide.__new__(bench_worker.TorchSide)  # no process-wide settings
    side.torch = torch
    reference = side.resnet20_model()
    model = convtrain.build_model(convtrain.model_config("resnet20"), (1, 28, 28), seed=0)
    model.load_state_dict(bench_worker.resnet20_weights())  # strict: every name and shape
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 8)
    optimizer = build_optimizer({"name": "sgd", "lr": 0.01, "momentum": 0.9}, model)
    step = side.train_step(reference)
    for _ in range(2):  # the second step sees the first one's update and running statistics
        loss, dlogits = softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(dlogits, input_grad=False)
        optimizer.step()
        assert loss == pytest.approx(step(x, y), rel=1e-5)
    with torch.no_grad():
        expected = reference.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x, training=False), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # two processes, each composing, warming up and timing 5 ResNet-20 steps
def test_the_resnet20_case_runs_end_to_end(tmp_path):
    table = tmp_path / "table.md"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_speed.py"), "--only", "resnet20",
         "--repeats", "1", "--block-seconds", "0", "--threads", "1", "--markdown", str(table)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ResNet-20 train step b128 28x28x1" in done.stdout and "img/s" in done.stdout
    assert "| ResNet-20 train step b128 28x28x1 |" in table.read_text()
