"""Global average pooling math: finite differences (float64), PyTorch equivalence, dtypes."""
import numpy as np
import pytest

from convtrain.errors import InternalError
from convtrain.ops.global_pool import global_avgpool2d_backward, global_avgpool2d_forward
from tests.gradcheck import check_gradients, projected_sum


def test_forward_is_the_mean_of_each_map():
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 6))
    y, cache = global_avgpool2d_forward(x)
    assert y.shape == (3, 4) and cache == (3, 4, 5, 6)
    expected = np.array([[x[n, c].sum() / 30 for c in range(4)] for n in range(3)])
    np.testing.assert_allclose(y, expected, rtol=1e-13)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 1, 1), (3, 2, 7, 1)])
def test_input_gradient_matches_finite_differences(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    y, cache = global_avgpool2d_forward(x)
    dy = rng.standard_normal(y.shape)
    dx = global_avgpool2d_backward(dy, cache)
    assert dx.shape == x.shape
    check_gradients(lambda: projected_sum(global_avgpool2d_forward(x)[0], dy), {"x": x},
                    {"x": dx}, tol=1e-7)


def test_float32_stays_float32():
    x = np.ones((2, 3, 4, 4), np.float32)
    y, cache = global_avgpool2d_forward(x)
    assert y.dtype == np.float32
    assert global_avgpool2d_backward(np.ones((2, 3), np.float32), cache).dtype == np.float32


def test_rejects_arrays_that_are_not_batches_of_maps():
    with pytest.raises(InternalError, match=r"global_avgpool2d: x must be 4-D \(N, C, H, W\)"):
        global_avgpool2d_forward(np.zeros((2, 3, 4)))
    with pytest.raises(InternalError, match=r"global_avgpool2d: x must be a floating-point"):
        global_avgpool2d_forward(np.zeros((2, 3, 4, 4), np.int32))
    _, cache = global_avgpool2d_forward(np.zeros((2, 3, 4, 4)))
    for wrong in ((1, 3), (2, 4)):  # (1, 3) would broadcast to both samples
        with pytest.raises(InternalError, match=r"global_avgpool2d backward: dy must have shape "
                                                r"\(2, 3\)"):
            global_avgpool2d_backward(np.zeros(wrong), cache)


def test_matches_torch_adaptive_avg_pool_and_flatten():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 5, 7, 6))
    reference = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(tx)
    y, cache = global_avgpool2d_forward(x)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(global_avgpool2d_backward(dy, cache), tx.grad.numpy(), rtol=1e-12)
