"""conv2d forward against scipy.signal.correlate, gradients against central differences:
the reference (convtrain.ops.conv), its naive twin, and the fast entry point with every route
(convtrain.ops.fast, routes forced through the plan)."""
import numpy as np
import pytest
from scipy.signal import correlate

from convtrain.errors import ConfigError, InternalError
from convtrain.ops import conv as reference
from convtrain.ops.fast import conv2d_backward, conv2d_forward, force_routes
from convtrain.ops.fast.plan import ConvPlan, Routes, current_routes
from convtrain.runtime.backend import cupy_available
from tests.gradcheck import check_gradients, projected_sum


def scipy_conv2d(x, weight, bias, stride, padding, dilation, groups):
    """Reference: per (sample, filter) sum of 2-D 'valid' correlations over the filter's group
    of channels, on an explicitly zero-padded input with an explicitly dilated kernel; stride
    by slicing the stride-1 result."""
    n, c, h, w = x.shape
    f, c_per_group, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dilated = np.zeros((f, c_per_group, dh * (kh - 1) + 1, dw * (kw - 1) + 1), dtype=x.dtype)
    dilated[:, :, ::dh, ::dw] = weight
    filters_per_group = f // groups
    outputs = []
    for sample in range(n):
        maps = []
        for filt in range(f):
            first_channel = (filt // filters_per_group) * c_per_group
            acc = sum(correlate(padded[sample, first_channel + k], dilated[filt, k], mode="valid")
                      for k in range(c_per_group))
            acc = acc[::sh, ::sw]
            maps.append(acc + (bias[filt] if bias is not None else 0.0))
        outputs.append(maps)
    return np.array(outputs)


# (N, C, H, W, F, kh, kw, stride, padding, dilation, groups, bias)
CASES = [
    (1, 1, 5, 5, 1, 3, 3, (1, 1), (0, 0), (1, 1), 1, False),
    (2, 3, 8, 8, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1, True),
    (2, 3, 9, 7, 2, 3, 3, (2, 2), (0, 0), (1, 1), 1, True),
    (1, 2, 10, 11, 3, 3, 3, (3, 3), (1, 1), (1, 1), 1, False),
    (3, 2, 7, 9, 2, 2, 3, (1, 2), (0, 1), (1, 1), 1, True),
    (2, 1, 12, 6, 5, 5, 1, (2, 1), (2, 0), (1, 1), 1, True),
    (1, 4, 6, 6, 2, 1, 1, (1, 1), (0, 0), (1, 1), 1, True),
    (2, 3, 11, 11, 3, 3, 3, (1, 1), (2, 2), (2, 2), 1, True),
    (1, 2, 13, 9, 2, 3, 2, (2, 1), (1, 1), (2, 3), 1, False),
    (2, 4, 8, 8, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2, True),
    (1, 4, 9, 10, 4, 2, 3, (2, 3), (1, 0), (1, 1), 2, False),
    (2, 6, 7, 7, 3, 3, 3, (1, 1), (0, 0), (1, 1), 3, True),
    (1, 4, 6, 6, 4, 3, 3, (1, 1), (1, 1), (1, 1), 4, True),  # depthwise
    (2, 4, 10, 10, 4, 3, 3, (2, 2), (2, 2), (2, 2), 2, True),
    (4, 3, 6, 5, 2, 6, 5, (1, 1), (0, 0), (1, 1), 1, True),  # kernel == input
    (1, 3, 4, 4, 2, 3, 3, (3, 3), (1, 1), (1, 1), 1, True),
    (2, 2, 5, 8, 3, 1, 4, (1, 3), (0, 2), (1, 1), 1, False),
    (3, 1, 7, 7, 2, 7, 7, (1, 1), (3, 3), (1, 1), 1, True),
    (2, 5, 9, 6, 7, 3, 1, (1, 1), (1, 0), (3, 1), 1, True),
    (1, 2, 8, 8, 2, 4, 4, (2, 2), (1, 1), (1, 1), 2, True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}x{}s{}p{}d{}g{}b{}".format(
    *c[:7], *(f"{a}{b}" for a, b in c[7:10]), c[10], int(c[11])))
def test_forward_matches_scipy_correlate(case, threading_mode):
    n, c, h, w, f, kh, kw, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c // groups, kh, kw))
    bias = rng.standard_normal(f) if has_bias else None
    y, _ = conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
    expected = scipy_conv2d(x, weight, bias, stride, padding, dilation, groups)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["alone", "parts"])
def threading_mode(request):
    """Run a test both ways a whole-batch convolution can run: on the calling thread alone
    (what these small test batches get by default) and as batch parts on the engine's threads
    (forced by dropping the size threshold; what large batches get)."""
    threshold = 0 if request.param == "parts" else Routes().min_part_column_bytes
    with force_routes(min_part_column_bytes=threshold):
        yield request.param


GRAD_CASES = [  # (x_shape, weight_shape, stride, padding, dilation, groups, bias)
    ((2, 3, 7, 6), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ((1, 2, 8, 7), (3, 2, 3, 2), (3, 3), (1, 0), (1, 1), 1, True),
    ((2, 2, 9, 8), (2, 2, 3, 3), (1, 2), (2, 1), (2, 2), 1, False),
    ((2, 4, 6, 6), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2, True),
    ((1, 4, 7, 5), (4, 1, 2, 3), (2, 1), (0, 1), (1, 2), 4, True),
]


@pytest.mark.parametrize("case", GRAD_CASES)
def test_backward_matches_finite_differences(case, threading_mode):
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[0]) if has_bias else None
    y, cache = conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
    dy = rng.standard_normal(y.shape)
    check_all_gradients(x, weight, bias, dy, conv2d_backward(dy, cache),
                        stride=stride, padding=padding, dilation=dilation, groups=groups)


def check_all_gradients(x, weight, bias, dy, grads, **conv_kwargs):
    """``grads = (dx, dweight, dbias)`` against central differences of ``sum(dy * conv(...))``
    for x, the weight and (when given) the bias; ``dbias`` must be None without a bias."""
    dx, dweight, dbias = grads

    def loss():
        return projected_sum(conv2d_forward(x, weight, bias, **conv_kwargs)[0], dy)

    inputs = {"x": x, "weight": weight}
    analytic = {"x": dx, "weight": dweight}
    if bias is not None:
        inputs["bias"], analytic["bias"] = bias, dbias
    else:
        assert dbias is None
    check_gradients(loss, inputs, analytic, eps=1e-6, tol=1e-7)


STRIDE_ONE_CASES = [  # (x_shape, weight_shape, stride, padding, dilation, groups, bias)
    ((2, 6, 10, 9), (5, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1, False),  # layer (b), small
    ((2, 3, 7, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    ((1, 2, 9, 8), (3, 2, 3, 2), (1, 1), (2, 1), (2, 3), 1, False),  # dilation, non-square
    ((2, 4, 6, 7), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2, False),  # groups
    ((1, 3, 5, 5), (3, 1, 3, 3), (1, 1), (1, 1), (1, 1), 3, False),  # depthwise
    ((2, 1, 6, 6), (2, 1, 3, 3), (1, 1), (0, 0), (1, 1), 1, False),  # one channel
    ((2, 2, 4, 5), (3, 2, 4, 5), (1, 1), (0, 0), (1, 1), 1, False),  # kernel == input
    ((1, 2, 3, 9), (2, 2, 3, 2), (1, 1), (0, 1), (1, 1), 1, False),  # one output row
]


@pytest.fixture(params=["row_fold", "col2im"])
def input_grad_method(request):
    """Force one of the two stride-1 input-gradient methods on wide im2col columns (the row
    fold needs wide columns; kernel-row columns always fold by rows), whatever the cost rules
    would pick for the shape."""
    with force_routes(input_grad=request.param, wide="always", columns="im2col"):
        yield request.param


@pytest.mark.parametrize("case", STRIDE_ONE_CASES, ids=lambda c: "x{}w{}p{}d{}g{}".format(
    "x".join(map(str, c[0])), "x".join(map(str, c[1])), *(f"{a}{b}" for a, b in c[3:5]), c[5]))
@pytest.mark.slow  # > 2 s: out of the fast suite
@pytest.mark.parametrize("max_workspace_mb", [None, 1e-6], ids=["whole", "chunked"])
def test_each_input_grad_method_matches_finite_differences(case, max_workspace_mb,
                                                           input_grad_method, threading_mode):
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(11)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    y, cache = conv2d_forward(x, weight, None, stride, padding, dilation, groups,
                              max_workspace_mb=max_workspace_mb)
    assert cache.geometry.wide
    # one sample is never split into chunks; more are, one at a time, under 1e-6 MiB
    assert (cache.cols is None) == (max_workspace_mb is not None and x_shape[0] > 1)
    dy = rng.standard_normal(y.shape)
    dx, _, _ = conv2d_backward(dy, cache)

    def loss():
        return projected_sum(conv2d_forward(x, weight, None, stride, padding, dilation,
                                            groups)[0], dy)

    check_gradients(loss, {"x": x}, {"x": dx}, eps=1e-6, tol=1e-7)


PER_SAMPLE_CASES = [  # narrow columns with fewer column rows than output pixels
    ((2, 2, 12, 11), (3, 2, 3, 3), (2, 2), (1, 1), (1, 1), 1, True),
    ((2, 3, 13, 10), (4, 3, 2, 3), (2, 1), (0, 1), (1, 1), 1, False),
    ((1, 2, 15, 14), (3, 2, 3, 3), (2, 2), (1, 1), (2, 2), 1, True),  # dilation
    ((3, 1, 9, 9), (4, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1, True),  # one channel
]


@pytest.mark.parametrize("case", PER_SAMPLE_CASES,
                         ids=lambda c: "x{}w{}s{}".format("x".join(map(str, c[0])),
                                                         "x".join(map(str, c[1])),
                                                         "".join(map(str, c[2]))))
@pytest.mark.parametrize("input_grad", [True, False])
def test_per_sample_gemms_match_the_batch_gemm_with_layout_copies(case, input_grad,
                                                                  threading_mode):
    """Narrow-column layers run one GEMM per sample (no layout copies); the batch GEMM path
    must give the same output and gradients (float64, to rounding). Finite differences
    check the per-sample path (the default) in test_backward_matches_finite_differences."""
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[0]) if has_bias else None
    results = {}
    for per_sample in (True, False):
        with force_routes(per_sample=per_sample):
            y, cache = conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
        assert cache.plan.per_sample is per_sample
        dy = np.random.default_rng(6).standard_normal(y.shape)
        results[per_sample] = (y, *conv2d_backward(dy, cache, input_grad=input_grad))
    for a, b in zip(results[True], results[False]):
        if a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_input_grad_methods_agree_on_a_lenet_sized_layer():
    """The row fold and col2im give the same dx (float64, to rounding) on benchmark layer (b)
    at a small batch, including a repeated call through the same workspace (the row fold
    keeps zero columns between calls)."""
    from convtrain.runtime.workspace import Workspace

    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 6, 14, 14))
    weight = rng.standard_normal((16, 6, 5, 5))
    results = {}
    for method in ("col2im", "row_fold"):
        ws = Workspace()
        for dy_seed in (0, 1):
            y, cache = conv2d_forward(x, weight, None, workspace=ws,
                                      routes=Routes(columns="im2col", input_grad=method))
            assert cache.plan.route == "im2col"
            assert cache.plan.row_fold is (method == "row_fold")
            dy = np.random.default_rng(dy_seed).standard_normal(y.shape)
            results[method, dy_seed] = conv2d_backward(dy, cache)[0]
    for dy_seed in (0, 1):
        np.testing.assert_allclose(results["row_fold", dy_seed], results["col2im", dy_seed],
                                   rtol=1e-12, atol=1e-12)


@pytest.fixture(params=["rows", "im2col"])
def columns_method(request):
    """Force kernel-row or im2col columns on wide (stride-1) layouts, whatever the cost rules
    would pick for the shape (grouped convolutions always take im2col)."""
    with force_routes(columns=request.param, wide="always"):
        yield request.param


ROW_COLUMN_CASES = [  # stride 1, no groups: (x_shape, weight_shape, padding, dilation, bias)
    ((2, 6, 10, 9), (5, 6, 5, 5), (0, 0), (1, 1), True),  # layer (b), small
    ((3, 3, 7, 8), (4, 3, 3, 3), (1, 1), (1, 1), True),
    ((2, 2, 9, 8), (3, 2, 3, 2), (2, 1), (2, 3), True),  # dilation, non-square kernel
    ((2, 1, 6, 6), (2, 1, 3, 3), (0, 0), (1, 1), False),  # one channel
    ((2, 2, 4, 5), (3, 2, 4, 5), (0, 0), (1, 1), True),  # kernel == input: one position
    ((1, 2, 3, 9), (2, 2, 3, 2), (0, 1), (1, 1), False),  # one output row
    ((2, 3, 6, 7), (4, 3, 1, 1), (0, 0), (1, 1), True),  # 1x1 kernel: no shift at all
    ((2, 2, 8, 6), (3, 2, 4, 1), (1, 0), (1, 1), True),  # kw == 1: no column shift
    ((2, 2, 5, 9), (3, 2, 1, 4), (0, 2), (1, 2), False),  # kh == 1: no row fold
]


@pytest.mark.parametrize("case", ROW_COLUMN_CASES, ids=lambda c: "x{}w{}p{}d{}b{}".format(
    "x".join(map(str, c[0])), "x".join(map(str, c[1])), *(f"{a}{b}" for a, b in c[2:4]),
    int(c[4])))
@pytest.mark.slow  # > 2 s: out of the fast suite
@pytest.mark.parametrize("max_workspace_mb", [None, 1e-6], ids=["whole", "chunked"])
def test_each_columns_method_matches_scipy_and_finite_differences(
        case, max_workspace_mb, columns_method, threading_mode):
    """Kernel-row columns (conv_rows) and im2col columns both give scipy's output and the
    finite-difference gradients of x, weight and bias: whole batch (kept columns) and chunked
    (recomputed), alone and as batch parts."""
    x_shape, w_shape, padding, dilation, has_bias = case
    rng = np.random.default_rng(13)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[0]) if has_bias else None
    y, cache = conv2d_forward(x, weight, bias, 1, padding, dilation,
                              max_workspace_mb=max_workspace_mb)
    assert cache.method == columns_method
    assert (cache.cols is None) == (max_workspace_mb is not None and x_shape[0] > 1)
    np.testing.assert_allclose(y, scipy_conv2d(x, weight, bias, (1, 1), padding, dilation, 1),
                               rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    check_all_gradients(x, weight, bias, dy, conv2d_backward(dy, cache), stride=1,
                        padding=padding, dilation=dilation)


def test_grouped_convolutions_keep_im2col_columns(columns_method):
    rng = np.random.default_rng(2)
    _, cache = conv2d_forward(rng.standard_normal((2, 4, 6, 6)),
                              rng.standard_normal((4, 2, 3, 3)), None, 1, 1, groups=2)
    assert cache.method == "im2col"


def test_columns_methods_agree_in_float32_through_a_reused_workspace():
    """Layer (b) as batch parts, float32, through ONE workspace that other layouts dirty in
    between (another batch size, a padded 3x3 layer writing the same named buffers): the
    kernel-row results still equal those of im2col columns from a fresh workspace, with and
    without input gradient (the kept zeros of shifted dY and the row of ones must be redone
    whenever the layout changed)."""
    from convtrain.runtime.workspace import Workspace

    rng = np.random.default_rng(4)
    layers = {"b": (rng.standard_normal((16, 6, 5, 5)).astype(np.float32) * 0.2,
                    rng.standard_normal(16).astype(np.float32), 0),
              "k3": (rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.2,
                     rng.standard_normal(8).astype(np.float32), 1)}
    shared = Workspace()
    for call, (name, n) in enumerate([("b", 20), ("k3", 12), ("b", 12), ("b", 20), ("k3", 20),
                                      ("b", 20)]):
        weight, bias, padding = layers[name]
        data = np.random.default_rng(call)
        x = data.standard_normal((n, 6, 14, 14)).astype(np.float32) * 3
        results = {}
        for method, ws in (("rows", shared), ("im2col", Workspace())):
            y, cache = conv2d_forward(x, weight, bias, 1, padding, workspace=ws,
                                      routes=Routes(columns=method, min_part_column_bytes=0))
            assert cache.method == method
            dy = np.random.default_rng(100 + call).standard_normal(y.shape).astype(np.float32)
            results[method] = (y, *conv2d_backward(dy, cache, input_grad=call % 3 != 1))
        for a, b in zip(results["rows"], results["im2col"]):
            if a is None:
                assert b is None and call % 3 == 1
            else:
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * float(np.abs(b).max()))


def test_the_cost_rule_picks_kernel_rows_only_where_they_move_less_memory():
    rng = np.random.default_rng(0)

    def method(x_shape, w_shape, padding=0, stride=1, groups=1):
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        return conv2d_forward(x, w, None, stride, padding, groups=groups)[1].method

    assert current_routes() == Routes()  # nothing forced: the rules decide
    assert method((2, 6, 14, 14), (16, 6, 5, 5)) == "rows"  # layer (b)
    assert method((2, 16, 28, 28), (16, 16, 3, 3), 1) == "rows"
    assert method((2, 32, 32, 32), (64, 32, 3, 3), 1) == "im2col"  # layer (c)
    assert method((2, 3, 32, 32), (16, 3, 3, 3), 1) == "im2col"
    assert method((2, 6, 14, 14), (16, 6, 5, 5), stride=2) == "im2col"
    assert method((2, 6, 14, 14), (16, 3, 5, 5), groups=2) == "im2col"


@pytest.mark.parametrize("n, parts", [(64, 2), (128, 2), (7, 2), (64, 3), (2, 2), (50, 4)])
def test_batch_parts_give_the_calling_thread_a_head_start(n, parts):
    """Part ranges tile the batch in order; the calling thread's (first) part is longer by
    the samples that the head start's seconds of work take, at most 1/8 of another part;
    with the head start off the split is even."""
    import dataclasses

    from convtrain.ops.fast.plan import plan_conv

    def plan(routes):
        planned = plan_conv((n, 6, 14, 14), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), (10, 10),
                            1, np, 4, None, routes)  # layer (b)
        return dataclasses.replace(planned, parts=parts, alone=False)

    defaults = Routes()
    assert plan(defaults).geometry.length == 136  # wide columns
    sample_flops = 1.5 * 2 * 16 * 6 * 25 * 136  # 1.5 forward GEMMs a sample
    ranges = plan(defaults).ranges(10, 10 + n)
    assert ranges[0][0] == 10 and ranges[-1][1] == 10 + n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    even = [n * (k + 1) // parts - n * k // parts for k in range(parts)]
    wanted = round(defaults.head_start_s * defaults.assumed_flops_per_s / sample_flops)
    assert sizes[0] - even[0] == min(wanted, min(even[1:]) // 8)
    assert sum(sizes) == n and all(s >= e - sizes[0] + even[0] for s, e in
                                   zip(sizes[1:], even[1:]))
    if n == 64 and parts == 2:
        assert sizes == [35, 29]  # layer (b): ~23 us of GEMM work a sample, 3 samples ahead
    sizes = [b - a for a, b in plan(Routes(head_start_s=0)).ranges(0, n)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 6)).astype(dtype)
    weight = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    bias = np.zeros(4, dtype=dtype)
    y, cache = conv2d_forward(x, weight, bias, 1, 1, 1, groups=2)
    grads = conv2d_backward(np.ones_like(y), cache)
    assert y.dtype == dtype
    assert all(g.dtype == dtype for g in grads)
    assert y.flags.c_contiguous and grads[0].flags.c_contiguous


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 10, 10))
    weight = rng.standard_normal((5, 3, 3, 3))
    y64, _ = conv2d_forward(x, weight, None, 2, 1)
    y32, _ = conv2d_forward(x.astype(np.float32), weight.astype(np.float32), None, 2, 1)
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)


ENTRY_POINTS = {"reference": (reference.conv2d_forward, reference.conv2d_backward),
                "fast": (conv2d_forward, conv2d_backward)}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("x_shape, w_shape, kwargs, match", [
    ((1, 3, 4, 4), (2, 3, 7, 7), {"padding": (1, 1)},
     r"kernel size 7 is larger than the padded input 6"),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"stride": (0, 1)}, r"stride must be at least 1, got 0"),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"padding": (-1, 0)}, r"padding must not be negative"),
])
def test_window_parameters_no_output_fits_raise_config_error(entry, x_shape, w_shape, kwargs,
                                                             match):
    with pytest.raises(ConfigError, match=match):
        ENTRY_POINTS[entry][0](np.zeros(x_shape), np.zeros(w_shape), **kwargs)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("x_shape, w_shape, kwargs, match", [
    ((1, 3, 5, 5), (2, 2, 3, 3), {}, r"3 channels but weight \(2, 2, 3, 3\) expects 2"),
    ((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}, r"filters 3 are not divisible by groups 2"),
    ((1, 3, 5, 5), (2, 1, 3, 3), {"groups": 2}, r"input channels 3 .* groups 2"),
    ((1, 3, 5, 5), (2, 3, 3, 3), {"groups": 0}, r"groups must be a positive int, got 0"),
    ((3, 5, 5), (2, 3, 3, 3), {}, r"x must be 4-D \(N, C, H, W\), got shape \(3, 5, 5\)"),
])
def test_arrays_that_do_not_fit_together_are_internal_errors(entry, x_shape, w_shape, kwargs,
                                                            match):
    """The layer checks channels and groups from its config (ConfigError); arrays that still
    disagree when they reach the math are a programming error that keeps its traceback."""
    with pytest.raises(InternalError, match=match):
        ENTRY_POINTS[entry][0](np.zeros(x_shape), np.zeros(w_shape), **kwargs)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_bias_shape_and_dtype_mismatch_are_rejected(entry):
    forward = ENTRY_POINTS[entry][0]
    x = np.zeros((1, 3, 5, 5), dtype=np.float32)
    weight = np.zeros((2, 3, 3, 3), dtype=np.float32)
    with pytest.raises(InternalError, match=r"bias must have shape \(2,\), got \(3,\)"):
        forward(x, weight, np.zeros(3, dtype=np.float32))
    with pytest.raises(InternalError, match=r"weight has dtype float64 but x has dtype float32"):
        forward(x, weight.astype(np.float64))
    with pytest.raises(InternalError, match=r"floating-point.*int64"):
        forward(np.zeros((1, 3, 5, 5), dtype=np.int64), weight)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_backward_rejects_wrong_dy_shape(entry):
    forward, backward = ENTRY_POINTS[entry]
    y, cache = forward(np.zeros((2, 3, 6, 6)), np.zeros((4, 3, 3, 3)))
    with pytest.raises(InternalError,
                       match=r"dy must have shape \(2, 4, 4, 4\), got \(2, 4, 4, 5\)"):
        backward(np.zeros((2, 4, 4, 5)), cache)
    with pytest.raises(InternalError, match=r"dy has dtype float32 but the forward input has "
                                            r"dtype float64"):
        backward(np.zeros((2, 4, 4, 4), dtype=np.float32), cache)


def test_matches_torch_when_available():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 9, 8))
    weight = rng.standard_normal((6, 2, 3, 2))
    bias = rng.standard_normal(6)
    kwargs = dict(stride=(2, 1), padding=(1, 1), dilation=(2, 1), groups=2)
    y, cache = conv2d_forward(x, weight, bias, **kwargs)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for ours, theirs in zip(conv2d_backward(dy, cache), (tx, tw, tb)):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
def test_cupy_matches_numpy():
    import cupy

    check_device_convolution_matches_numpy(cupy)


def test_strict_cupy_matches_numpy(strict_cupy):
    check_device_convolution_matches_numpy(strict_cupy)


def check_device_convolution_matches_numpy(cupy):
    """The layer's entry point on device arrays (the reference route) equals NumPy's fast
    paths: output and every gradient, grouped, strided and dilated."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    weight = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)
    kwargs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    y, cache = conv2d_forward(x, weight, bias, **kwargs)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    grads = conv2d_backward(dy, cache)
    y_gpu, cache_gpu = conv2d_forward(*(cupy.asarray(a) for a in (x, weight, bias)), **kwargs)
    assert isinstance(cache_gpu, reference.ConvCache)  # device arrays take the reference route
    grads_gpu = conv2d_backward(cupy.asarray(dy), cache_gpu)
    np.testing.assert_allclose(cupy.asnumpy(y_gpu), y, rtol=1e-4, atol=1e-4)
    for ours, gpu in zip(grads, grads_gpu):
        np.testing.assert_allclose(cupy.asnumpy(gpu), ours, rtol=1e-4, atol=1e-4)


def test_reference_route_keeps_the_workspace_limit(strict_cupy):
    """Device arrays take the reference route; over the workspace limit it runs in chunks of
    samples that keep no columns (as the CPU paths do), with the same results."""
    from convtrain.ops.fast.conv import ReferenceChunks

    rng = np.random.default_rng(8)
    x = rng.standard_normal((5, 4, 9, 8))
    weight = rng.standard_normal((6, 2, 3, 3))
    bias = rng.standard_normal(6)
    kwargs = dict(stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2)
    y, cache = reference.conv2d_forward(x, weight, bias, **kwargs)
    dy = rng.standard_normal(y.shape)
    expected = reference.conv2d_backward(dy, cache)
    device = [strict_cupy.asarray(a) for a in (x, weight, bias)]
    # a 12 KiB limit: less than one sample's columns, output and padded input (float64)
    y_dev, cache_dev = conv2d_forward(*device, **kwargs, max_workspace_mb=12 / 1024)
    assert isinstance(cache_dev, ReferenceChunks) and 1 <= cache_dev.chunk < 5
    np.testing.assert_allclose(strict_cupy.asnumpy(y_dev), y, rtol=1e-12, atol=1e-12)
    for ours, dev in zip(expected, conv2d_backward(strict_cupy.asarray(dy), cache_dev)):
        np.testing.assert_allclose(strict_cupy.asnumpy(dev), ours, rtol=1e-12, atol=1e-12)
    _, dw_only, _ = conv2d_backward(strict_cupy.asarray(dy), cache_dev, input_grad=False)
    np.testing.assert_allclose(strict_cupy.asnumpy(dw_only), expected[1], rtol=1e-12)


# --- the reference and its naive twin -----------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: "N{}C{}H{}W{}F{}k{}x{}s{}p{}d{}g{}b{}".format(
    *c[:7], *(f"{a}{b}" for a, b in c[7:10]), c[10], int(c[11])))
def test_reference_and_naive_forward_match_scipy_correlate(case):
    n, c, h, w, f, kh, kw, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = rng.standard_normal((n, c, h, w))
    weight = rng.standard_normal((f, c // groups, kh, kw))
    bias = rng.standard_normal(f) if has_bias else None
    expected = scipy_conv2d(x, weight, bias, stride, padding, dilation, groups)
    y, _ = reference.conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
    assert y.flags.c_contiguous
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    naive = reference.conv2d_naive(x, weight, bias, stride, padding, dilation, groups)
    np.testing.assert_allclose(naive, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", GRAD_CASES + STRIDE_ONE_CASES)
@pytest.mark.parametrize("input_grad", [True, False])
def test_reference_backward_matches_finite_differences(case, input_grad):
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = case
    rng = np.random.default_rng(17)
    x = rng.standard_normal(x_shape)
    weight = rng.standard_normal(w_shape)
    bias = rng.standard_normal(w_shape[0]) if has_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y, cache = reference.conv2d_forward(x, weight, bias, **kwargs)
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = reference.conv2d_backward(dy, cache, input_grad=input_grad)
    assert (dx is None) is not input_grad

    def loss():
        return projected_sum(reference.conv2d_forward(x, weight, bias, **kwargs)[0], dy)

    inputs, analytic = {"weight": weight}, {"weight": dweight}
    if input_grad:
        inputs["x"], analytic["x"] = x, dx
    if bias is not None:
        inputs["bias"], analytic["bias"] = bias, dbias
    else:
        assert dbias is None
    check_gradients(loss, inputs, analytic, eps=1e-6, tol=1e-7)


def test_reference_handles_an_empty_batch():
    y, cache = reference.conv2d_forward(np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)),
                                        np.ones(3))
    assert y.shape == (0, 3, 3, 3)
    dx, dweight, dbias = reference.conv2d_backward(np.zeros(y.shape), cache)
    assert dx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(dweight, 0)
    np.testing.assert_array_equal(dbias, 0)


# --- every fast route equals the reference -------------------------------------------------

ROUTES = {  # name -> (forced routes, the route the plan must take on stride-1 ungrouped cases)
    "narrow batch GEMM": (dict(columns="im2col", wide="never", per_sample=False), "im2col"),
    "narrow per-sample": (dict(columns="im2col", wide="never", per_sample=True), "im2col"),
    "wide col2im": (dict(columns="im2col", wide="always", input_grad="col2im"), "im2col"),
    "wide row fold": (dict(columns="im2col", wide="always", input_grad="row_fold"), "im2col"),
    "kernel rows": (dict(columns="rows", wide="always"), "rows"),
    "rules": ({}, None),
}

# (x_shape, weight_shape, stride, padding, dilation, groups, bias)
ROUTE_SHAPES = [
    ((3, 1, 9, 9), (4, 1, 5, 5), (1, 1), (2, 2), (1, 1), 1, True),  # one channel
    ((4, 3, 8, 7), (5, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, True),  # several channels
    ((3, 2, 11, 10), (3, 2, 3, 2), (1, 1), (2, 1), (2, 3), 1, False),  # dilation
    ((3, 3, 13, 10), (4, 3, 2, 3), (2, 1), (0, 1), (1, 1), 1, True),  # stride
    ((2, 4, 9, 9), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2, True),  # groups
    ((2, 4, 10, 10), (4, 1, 3, 3), (2, 2), (2, 2), (2, 2), 4, False),  # depthwise, strided
    ((3, 6, 12, 12), (16, 6, 5, 5), (1, 1), (0, 0), (1, 1), 1, True),  # layer (b), small
    ((2, 2, 3, 9), (2, 2, 3, 2), (1, 1), (0, 1), (1, 1), 1, False),  # one output row
]


@pytest.mark.parametrize("shape", ROUTE_SHAPES, ids=lambda c: "x{}w{}s{}p{}d{}g{}".format(
    "x".join(map(str, c[0])), "x".join(map(str, c[1])),
    *("".join(map(str, v)) for v in c[2:5]), c[5]))
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("threads", ["alone", "parts"])
@pytest.mark.parametrize("max_workspace_mb", [None, 1e-6], ids=["whole", "chunked"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_every_fast_route_equals_the_reference(shape, route, threads, max_workspace_mb, dtype):
    """Output and every gradient (dx, dW, db; and dW without dx) of the fast entry point, with
    the route forced through the plan, against :mod:`convtrain.ops.conv`: float64 to
    rounding, float32 within float32 tolerance."""
    x_shape, w_shape, stride, padding, dilation, groups, has_bias = shape
    forced, expected_route = ROUTES[route]
    rng = np.random.default_rng(23)
    x = rng.standard_normal(x_shape).astype(dtype)
    weight = rng.standard_normal(w_shape).astype(dtype)
    bias = rng.standard_normal(w_shape[0]).astype(dtype) if has_bias else None
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    y_ref, cache_ref = reference.conv2d_forward(x, weight, bias, **kwargs)
    dy = rng.standard_normal(y_ref.shape).astype(dtype)
    want = (y_ref, *reference.conv2d_backward(dy, cache_ref))
    threshold = 0 if threads == "parts" else Routes().min_part_column_bytes
    with force_routes(min_part_column_bytes=threshold, **forced):
        y, cache = conv2d_forward(x, weight, bias, **kwargs, max_workspace_mb=max_workspace_mb)
        got = (y, *conv2d_backward(dy, cache))
        _, again = conv2d_forward(x, weight, bias, **kwargs, max_workspace_mb=max_workspace_mb)
        without_dx = conv2d_backward(dy, again, input_grad=False)
    plan = cache.plan
    if expected_route and stride == (1, 1) and groups == 1:
        assert plan.route == expected_route
    if forced.get("wide") == "always" and stride == (1, 1):
        assert plan.geometry.wide
    if forced.get("input_grad") == "row_fold" and plan.route == "im2col" and plan.geometry.wide:
        assert plan.row_fold
    assert plan.keeps_columns is (max_workspace_mb is None or x_shape[0] == 1)
    assert without_dx[0] is None
    tol = 1e-11 if dtype == np.float64 else 2e-5
    for name, a, b in zip(("y", "dx", "dweight", "dbias"), got, want):
        if b is None:
            assert a is None, name
            continue
        assert a.dtype == dtype and a.shape == b.shape, name
        scale = float(np.abs(b).max()) or 1.0
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=name)
    for name, a, b in zip(("dweight", "dbias"), without_dx[1:], got[2:]):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.abs(b).max()),
                                       err_msg=name)


def test_non_numpy_arrays_take_the_reference_route():
    """Any array module but NumPy (CuPy) plans the reference: the speed paths are CPU paths."""
    from convtrain.ops.fast.plan import plan_conv

    class OtherArrayModule:  # stands for cupy: only its identity matters to the planner
        pass

    args = ((2, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), (8, 8), 1)
    assert plan_conv(*args, OtherArrayModule(), 4, None).route == "reference"
    assert plan_conv(*args, np, 4, None).route in ("im2col", "rows")
    assert plan_conv(*args, np, 4, None, Routes(columns="reference")).route == "reference"


def test_a_reference_route_cache_goes_back_through_the_fast_backward():
    rng = np.random.default_rng(8)
    x, weight = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    with force_routes(columns="reference"):
        y, cache = conv2d_forward(x, weight, None, 1, 1)
    assert isinstance(cache, reference.ConvCache)
    dy = rng.standard_normal(y.shape)
    for a, b in zip(conv2d_backward(dy, cache), reference.conv2d_backward(dy, cache)):
        if b is None:
            assert a is None
        else:
            np.testing.assert_array_equal(a, b)


def test_forced_routes_apply_inside_the_block_only_and_reject_unknown_names():
    assert current_routes() == Routes()
    with force_routes(columns="rows", parts=False) as routes:
        assert current_routes() is routes and routes.columns == "rows" and not routes.parts
        with force_routes(wide="always"):
            assert current_routes().columns == "rows"  # nested blocks add to the outer one
            assert current_routes().wide == "always"
        with pytest.raises(InternalError, match="contradict"):  # rows always fold dx by rows
            with force_routes(input_grad="col2im"):
                pass
    assert current_routes() == Routes()
    for bad in (dict(columns="fastest"), dict(wide="yes"), dict(input_grad="fold")):
        with pytest.raises(InternalError, match="Routes"):
            Routes(**bad)


def test_the_plan_says_what_runs():
    """A chunked im2col layer runs one batch-GEMM piece a chunk (no parts, no per-sample
    GEMMs); kernel-row columns always fold dx by rows."""
    _, cache = conv2d_forward(np.zeros((64, 1, 28, 28), np.float32),
                              np.zeros((6, 1, 5, 5), np.float32), padding=2, max_workspace_mb=1)
    assert cache.plan.route == "im2col" and cache.plan.chunk < 64
    assert (cache.plan.parts, cache.plan.alone, cache.plan.per_sample) == (1, False, False)
    _, cache = conv2d_forward(np.zeros((4, 16, 28, 28)), np.zeros((16, 16, 3, 3)), padding=1,
                              routes=Routes(columns="rows"))
    assert cache.plan.route == "rows" and cache.plan.row_fold


def test_the_plan_object_is_frozen():
    import dataclasses

    _, cache = conv2d_forward(np.zeros((2, 3, 6, 6)), np.zeros((4, 3, 3, 3)))
    assert isinstance(cache.plan, ConvPlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cache.plan.parts = 3
