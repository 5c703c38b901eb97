"""Workspace limit and buffer reuse of the convolution engine.

Under a workspace limit the convolution processes the batch in chunks of samples (recomputing
the im2col columns in the backward pass); results must not depend on the chunking, reused
buffers must not leak between calls, and the scratch memory must respect the limit.
"""
import os
import threading
import time
import tracemalloc

import numpy as np
import pytest

from convtrain import runtime
from convtrain.errors import ConfigError, InternalError
from convtrain.ops.fast import Routes, conv2d_backward, conv2d_forward, force_routes
from convtrain.runtime.threads import get_num_threads, set_num_threads, split_ranges
from convtrain.runtime.workspace import Workspace, get_max_workspace_mb, set_max_workspace_mb
from convtrain.nn import Conv2d
from tests.gradcheck import check_gradients, projected_sum

# (N, C, H, W, F, k, stride, padding, dilation, groups): wide (stride 1) and strided paths.
CASES = [
    (5, 3, 9, 8, 4, 3, 1, 1, 1, 1),
    (4, 1, 12, 12, 6, 5, 1, 2, 1, 1),
    (3, 6, 10, 10, 8, 5, 1, 0, 1, 1),
    (5, 3, 15, 13, 4, 7, 2, 3, 1, 1),
    (4, 4, 11, 11, 6, 3, 1, 2, 2, 2),
    (3, 4, 9, 9, 4, 3, 2, 1, 1, 4),
    (6, 2, 1, 7, 3, (1, 3), 1, (0, 1), 1, 1),  # one output row: no garbage columns
]


def _run(case, max_workspace_mb, workspace=None, dtype=np.float64, seed=0):
    n, c, h, w, f, k, s, p, d, g = case
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = rng.standard_normal((f, c // g, kh, kw)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    y, cache = conv2d_forward(x, weight, bias, s, p, d, g, workspace=workspace,
                              max_workspace_mb=max_workspace_mb)
    dy = rng.standard_normal(y.shape).astype(dtype)
    return (y, *conv2d_backward(dy, cache)), cache


def _few_samples_limit(case):
    """The smallest limit (MiB) that puts 2 or more (but not all) samples in a chunk."""
    limit = 1e-4
    while _run(case, limit)[1].chunk < 2:
        limit *= 1.25
    return limit


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("chunking", ["one sample", "a few"])
@pytest.mark.parametrize("threshold", [None, 0], ids=["whole-alone", "whole-parts"])
def test_chunked_equals_unchunked(case, chunking, threshold):
    limit_mb = 1e-6 if chunking == "one sample" else _few_samples_limit(case)
    if threshold is None:
        whole, cache_whole = _run(case, None)
    else:  # the unchunked run as batch parts on the engine's threads
        with force_routes(min_part_column_bytes=threshold):
            whole, cache_whole = _run(case, None)
    chunked, cache_chunked = _run(case, limit_mb)
    assert cache_whole.chunk == case[0] and cache_whole.cols is not None
    assert cache_chunked.chunk < case[0] and cache_chunked.cols is None
    for a, b in zip(whole, chunked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[4]])
def test_chunked_gradients_match_finite_differences(case):
    n, c, h, w, f, k, s, p, d, g = case
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, c, h, w))
    weight = rng.standard_normal((f, c // g, k, k))
    bias = rng.standard_normal(f)
    y, cache = conv2d_forward(x, weight, bias, s, p, d, g, max_workspace_mb=1e-6)
    assert cache.chunk == 1
    dy = rng.standard_normal(y.shape)
    dx, dweight, dbias = conv2d_backward(dy, cache)

    def loss():
        return projected_sum(conv2d_forward(x, weight, bias, s, p, d, g,
                                            max_workspace_mb=1e-6)[0], dy)

    check_gradients(loss, {"x": x, "weight": weight, "bias": bias},
                    {"x": dx, "weight": dweight, "bias": dbias}, eps=1e-6, tol=1e-7)


@pytest.mark.parametrize("limit_mb", [None, 1e-6])
def test_reused_workspace_gives_fresh_results(limit_mb):
    """Buffers are reused between calls and across batch sizes without stale data."""
    ws = Workspace()
    case = CASES[0]
    first, _ = _run(case, limit_mb, ws, seed=0)
    held = ws.nbytes
    other, _ = _run((2,) + case[1:], limit_mb, ws, seed=5)  # smaller batch, other values
    again, _ = _run(case, limit_mb, ws, seed=0)
    assert ws.nbytes == held  # no growth: a smaller batch reuses the prefix of the buffers
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    reference, _ = _run((2,) + case[1:], limit_mb, None, seed=5)
    for a, b in zip(reference, other):
        np.testing.assert_array_equal(a, b)


def test_float32_chunked_matches_unchunked():
    whole, _ = _run(CASES[1], None, dtype=np.float32)
    chunked, _ = _run(CASES[1], 1e-6, dtype=np.float32)
    for a, b in zip(whole, chunked):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["rows", "im2col"])
@pytest.mark.parametrize("parts", [False, True], ids=["alone", "parts"])
def test_input_grad_false_skips_dx_only(method, parts):
    """Skipping dx changes nothing else, bitwise: also as batch parts (whose dW shares are
    summed, so the batch must be split alike with and without dx)."""
    threshold = 0 if parts else Routes().min_part_column_bytes
    with force_routes(columns=method, min_part_column_bytes=threshold):
        _check_input_grad_false_skips_dx_only(method)


def _check_input_grad_false_skips_dx_only(method):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 6, 14, 14)).astype(np.float32)
    weight = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    y, cache = conv2d_forward(x, weight, bias)
    assert cache.method == method
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dweight, dbias = conv2d_backward(dy, cache)
    none, dweight2, dbias2 = conv2d_backward(dy, cache, input_grad=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(dweight, dweight2)
    np.testing.assert_array_equal(dbias, dbias2)


def test_layer_workspace_limit_bounds_scratch_memory():
    """A 7x7 stride-2 layer: unchunked columns would be ~59 MB (+ as much for their
    gradient); under a 16 MiB limit the scratch memory stays within the limit."""
    n, c, hw = 8, 3, 224
    layer = Conv2d(c, 16, 7, stride=2, padding=3, rng=np.random.default_rng(0),
                   max_workspace_mb=16)
    x = np.random.default_rng(1).standard_normal((n, c, hw, hw), dtype=np.float32)
    dy = np.ones((n, 16, 112, 112), dtype=np.float32)
    inherent = x.nbytes + 2 * dy.nbytes + x.nbytes  # input, output, dy, dx
    tracemalloc.start()
    try:
        layer.forward(x)
        layer.backward(dy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert layer.cache is None
    assert layer.workspace.nbytes <= 16 * 2**20
    assert peak - inherent < 20 * 2**20, f"peak {peak / 2**20:.1f} MiB"


@pytest.mark.parametrize("n, limit_mb", [(50, 4), (37, 2), (64, 6)])
def test_kernel_row_chunks_stay_within_the_workspace_limit(n, limit_mb):
    """Layer (b) on kernel-row columns under a limit that cuts the batch into several chunks
    of several samples, each run as batch parts; a shorter last chunk, small enough to run
    alone, must still be cut like a full one, or its one part's buffers would outgrow the
    full chunk's parts; results equal the unchunked layer's."""
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 6, 14, 14)).astype(np.float32)
    dy = rng.standard_normal((n, 16, 10, 10)).astype(np.float32)
    results = []
    for limit in (limit_mb, None):
        layer = Conv2d(6, 16, 5, rng=np.random.default_rng(0), max_workspace_mb=limit)
        y = layer.forward(x)
        assert layer.cache.method == "rows"
        if limit is not None:
            assert 1 < layer.cache.chunk < n and layer.cache.cols is None
        dx = layer.backward(dy)
        results.append((y, dx, layer.grads["weight"].copy(), layer.grads["bias"].copy()))
        if limit is not None:
            assert layer.workspace.nbytes <= limit * 2**20
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()))


def test_global_setting_and_validation():
    previous = get_max_workspace_mb()
    try:
        runtime.set_max_workspace_mb(1e-6)
        _, cache = _run(CASES[0], None)
        assert cache.chunk == 1
        runtime.set_max_workspace_mb(None)
        _, cache = _run(CASES[0], None)
        assert cache.chunk == CASES[0][0]
    finally:
        set_max_workspace_mb(previous)
    for bad in (0, -1, "big", True, float("nan")):
        with pytest.raises(ConfigError, match="max_workspace_mb"):
            set_max_workspace_mb(bad)
    with pytest.raises(ConfigError, match=r"model.layers.conv1.max_workspace_mb"):
        Conv2d(1, 2, 3, max_workspace_mb=0, where="model.layers.conv1")


def test_thread_setting_and_ranges():
    assert split_ranges(5, 2) == [(0, 2), (2, 5)]
    assert split_ranges(1, 4) == [(0, 1)]
    previous = get_num_threads()
    # batch parts even for this small case (they are kept for >= 1 MiB of columns a part)
    try:
        with force_routes(min_part_column_bytes=0):
            single, _ = _run(CASES[2], None)
            set_num_threads(1)
            again, _ = _run(CASES[2], None)
    finally:
        set_num_threads(previous)
    # Two threads run batch halves with their own GEMMs (and sum two dW shares): the same
    # values up to float64 rounding.
    for a, b in zip(single, again):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="num_threads"):
        set_num_threads(0)


def test_model_backward_can_skip_the_input_gradient():
    import convtrain

    cfg = {"layers": {"conv1": {"type": "conv2d", "filters": 3, "kernel_size": 3, "padding": 1},
                      "relu1": {"type": "relu"}, "flat": {"type": "flatten"},
                      "fc": {"type": "dense", "units": 4}}}
    model = convtrain.build_model(cfg, (2, 6, 6), seed=0, dtype=np.float64)
    x = np.random.default_rng(0).standard_normal((5, 2, 6, 6))
    dlogits = np.random.default_rng(1).standard_normal((5, 4))
    model.forward(x)
    dx = model.backward(dlogits)
    grads = {k: v.copy() for k, v in model.layers["conv1"].grads.items()}
    model.forward(x)
    assert model.backward(dlogits, input_grad=False) is None
    assert dx.shape == x.shape
    for k, v in model.layers["conv1"].grads.items():
        np.testing.assert_array_equal(v, grads[k])


def test_empty_batch_gives_empty_output_and_gradients():
    layer = Conv2d(3, 4, 3, padding=1)
    x = np.zeros((0, 3, 5, 5), np.float32)
    y = layer.forward(x)
    assert y.shape == (0, 4, 5, 5)
    dx = layer.backward(np.zeros_like(y))
    assert dx.shape == x.shape
    np.testing.assert_array_equal(layer.grads["weight"], 0)


def test_backward_with_a_stale_cache_is_an_error_not_garbage():
    rng = np.random.default_rng(0)
    ws = Workspace()
    w = rng.standard_normal((4, 3, 3, 3))
    x1, x2 = rng.standard_normal((2, 2, 3, 6, 6))
    _, cache1 = conv2d_forward(x1, w, workspace=ws)
    conv2d_forward(x2, w, workspace=ws)  # overwrites the buffers cache1 points into
    with pytest.raises(InternalError, match="stale cache"):
        conv2d_backward(rng.standard_normal((2, 4, 4, 4)), cache1)
    # without a shared workspace every call owns its buffers: both caches stay valid
    _, c1 = conv2d_forward(x1, w)
    conv2d_forward(x2, w)
    dx, dw, _ = conv2d_backward(np.ones((2, 4, 4, 4)), c1)
    _, fresh = conv2d_forward(x1, w)
    dx_ref, dw_ref, _ = conv2d_backward(np.ones((2, 4, 4, 4)), fresh)
    np.testing.assert_array_equal(dw, dw_ref)


def test_marked_buffers_keep_their_zeros_and_reset_on_layout_change():
    """Padded inputs and wide dY columns keep their zero borders / garbage columns between
    calls; a different batch size (or a plain get of the name) makes them fresh again."""
    ws = Workspace()
    view, fresh = ws.get_marked("a", (2, 3), np.float32, np, ("k", 2))
    assert fresh
    view[...] = 7
    again, fresh = ws.get_marked("a", (2, 3), np.float32, np, ("k", 2))
    assert not fresh and (again == 7).all()
    assert ws.get_marked("a", (3, 2), np.float32, np, ("k", 3))[1]
    ws.get("a", (3, 2), np.float32)
    assert ws.get_marked("a", (3, 2), np.float32, np, ("k", 3))[1]
    # the same conv layer over varying batch sizes gives the fresh-workspace results
    rng = np.random.default_rng(0)
    layer_ws = Workspace()
    for n in (5, 3, 5, 1, 5):
        for case in (CASES[0], CASES[1], CASES[6]):
            _, c, h, w, f, k, s, p, d, g = case
            kh, kw = (k, k) if isinstance(k, int) else k
            x = rng.standard_normal((n, c, h, w))
            weight = rng.standard_normal((f, c // g, kh, kw))
            y, cache = conv2d_forward(x, weight, None, s, p, d, g, workspace=layer_ws)
            dy = rng.standard_normal(y.shape)
            got = (y, *conv2d_backward(dy, cache)[:2])
            y2, cache2 = conv2d_forward(x, weight, None, s, p, d, g)
            want = (y2, *conv2d_backward(dy, cache2)[:2])
            for a, b in zip(got, want):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and 2 CPUs")
def test_threads_are_pinned_only_when_the_process_has_exactly_num_threads_cpus():
    """With exactly 2 allowed CPUs and 2 engine threads, the worker runs on its own CPU and
    the caller stays off it during a parallel section (an unpinned worker woken by the caller
    was measured sharing the caller's CPU for ~45 ms after idle); the caller's own affinity is
    restored afterwards. With more CPUs than threads, or pin_threads off, nothing is pinned."""
    from convtrain.runtime.threads import run_parts, set_pin_threads

    original = os.sched_getaffinity(0)
    two = set(sorted(original)[:2])
    seen = {}

    def record(k, a, b):
        seen[k] = os.sched_getaffinity(0)

    previous_threads = get_num_threads()
    try:
        os.sched_setaffinity(0, two)
        set_num_threads(2)  # a fresh pool, planned for the 2 allowed CPUs
        worker_cpu = max(two)
        for caller_cpus in (two, {worker_cpu}):  # also a caller sitting on the worker's CPU
            os.sched_setaffinity(0, caller_cpus)
            seen.clear()
            run_parts(record, [(0, 1), (1, 2)])
            assert seen[1] == {worker_cpu}
            assert seen[0] == two - {worker_cpu}
            assert os.sched_getaffinity(0) == caller_cpus  # restored after the section
        os.sched_setaffinity(0, two)

        set_pin_threads(False)
        seen.clear()
        run_parts(record, [(0, 1), (1, 2)])
        assert seen[0] == two and seen[1] == two

        if len(original) > 2:  # more CPUs than engine threads: never pinned
            os.sched_setaffinity(0, original)
            set_pin_threads(True)
            seen.clear()
            run_parts(record, [(0, 1), (1, 2)])
            assert seen[0] == original and seen[1] == original
        with pytest.raises(ConfigError, match="pin_threads"):
            set_pin_threads("yes")
    finally:
        os.sched_setaffinity(0, original)
        set_pin_threads(True)
        set_num_threads(previous_threads)


def test_small_convolutions_run_on_the_calling_thread_large_ones_as_parts(monkeypatch):
    """The threshold that keeps small work on one thread (waking a second one costs more)."""
    import convtrain.ops.fast.conv as conv_module
    from convtrain.runtime import threads as parallel

    calls = []  # the plan's decision, seen where the fast paths hand it to the threads
    monkeypatch.setattr(conv_module, "run_parts",
                        lambda fn, ranges: (calls.append(("parts", len(ranges))),
                                            parallel.run_parts(fn, ranges)))
    monkeypatch.setattr(conv_module, "run_alone",
                        lambda fn, ranges: (calls.append(("alone", len(ranges))),
                                            parallel.run_alone(fn, ranges)))
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    for n, expected in ((8, ("alone", 1)), (64, ("parts", min(2, get_num_threads())))):
        calls.clear()
        x = rng.standard_normal((n, 6, 14, 14)).astype(np.float32)
        y, cache = conv2d_forward(x, weight)
        conv2d_backward(np.ones_like(y), cache)
        if not parallel.can_run_parts():  # one thread or no threadpoolctl: always one piece
            expected = ("parts", 1)
        assert calls == [expected, expected]


def test_parallel_sections_report_errors_and_stay_usable():
    """A part that raises, on a worker or on the calling thread, is re-raised by run_parts
    after every part has finished (the others keep writing into the caller's arrays until
    then); the workers serve the next section normally."""
    from convtrain.runtime.threads import run_parts

    previous = get_num_threads()
    try:
        set_num_threads(2)
        finished = []

        def part(k, a, b):
            if k == raising:
                raise ValueError(f"part {k} failed")
            time.sleep(0.02)
            finished.append(k)

        for raising in (1, 0):
            finished.clear()
            with pytest.raises(ValueError, match=f"part {raising} failed"):
                run_parts(part, [(0, 1), (1, 2)])
            assert finished == [1 - raising]  # the other part ran to its end first
        raising = None
        seen = set()
        run_parts(lambda k, a, b: seen.add((k, threading.current_thread().name)),
                  [(0, 1), (1, 2)])
        assert {k for k, _ in seen} == {0, 1}
        assert len({name for _, name in seen}) == 2  # two threads
    finally:
        set_num_threads(previous)


def test_an_interrupted_section_waits_for_its_worker_and_the_pool_recovers():
    """Ctrl-C while the calling thread waits for a worker: the KeyboardInterrupt is raised
    only after the worker's part has ended (it writes into the caller's arrays, and the next
    section must not overwrite its task), and later sections run normally."""
    import signal

    from convtrain.runtime.threads import run_parts

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")
    previous = get_num_threads()
    try:
        set_num_threads(2)
        finished = []
        main_id = threading.get_ident()

        def part(k, a, b):
            if k == 1:
                time.sleep(0.05)  # the caller is waiting in join() by now
                signal.pthread_kill(main_id, signal.SIGINT)
                time.sleep(0.1)
            finished.append(k)

        with pytest.raises(KeyboardInterrupt):
            run_parts(part, [(0, 1), (1, 2)])
        assert sorted(finished) == [0, 1]
        out = [None, None]
        run_parts(lambda k, a, b: out.__setitem__(k, (k, a, b)), [(0, 1), (1, 2)])
        assert out == [(0, 0, 1), (1, 1, 2)]
    finally:
        set_num_threads(previous)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers():
    """After a fork the child has none of the parent's worker threads: its first parallel
    section must start new ones (not wait forever on the parent's)."""
    import subprocess
    import sys

    script = (
        "import os, sys\n"
        "from convtrain.runtime.threads import run_parts, set_num_threads\n"
        "set_num_threads(2)\n"
        "out = [None, None]\n"
        "run_parts(lambda k, a, b: out.__setitem__(k, k), [(0, 1), (1, 2)])\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    seen = [None, None]\n"
        "    run_parts(lambda k, a, b: seen.__setitem__(k, k), [(0, 1), (1, 2)])\n"
        "    os._exit(0 if seen == [0, 1] else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], timeout=30, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr


def test_a_section_started_while_another_runs_goes_inline():
    """The workers serve one parallel section at a time: a second thread that starts one
    meanwhile runs its parts itself, one after the other, with the same results."""
    from convtrain.runtime.threads import run_parts

    previous = get_num_threads()
    try:
        set_num_threads(2)
        inside = threading.Event()
        release = threading.Event()
        names = {}

        def slow(k, a, b):
            inside.set()
            release.wait(5)

        def other(k, a, b):
            names[k] = threading.current_thread().name

        holder = threading.Thread(target=run_parts, args=(slow, [(0, 1), (1, 2)]))
        holder.start()
        assert inside.wait(5)
        try:
            run_parts(other, [(0, 1), (1, 2)])
        finally:
            release.set()
            holder.join(5)
        assert names == {0: threading.current_thread().name,
                         1: threading.current_thread().name}
    finally:
        set_num_threads(previous)


def test_blas_single_thread_sets_and_restores_every_blas_as_threadpoolctl_sees_it():
    """Inside the block every BLAS NumPy uses runs one thread (read back through threadpoolctl,
    independently of the engine's own handles, which call OpenBLAS's C functions directly);
    nested blocks keep it at one, and leaving restores what was there, also after an error."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from convtrain.runtime.blas import blas_single_thread

    def counts():
        return [info["num_threads"] for info in threadpoolctl.threadpool_info()
                if info["user_api"] == "blas"]

    if not counts():
        pytest.skip("no BLAS that threadpoolctl can see")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = counts()
        with pytest.raises(RuntimeError):
            with blas_single_thread():
                assert counts() == [1] * len(before)
                with blas_single_thread():
                    assert counts() == [1] * len(before)
                assert counts() == [1] * len(before)
                raise RuntimeError("inside")
        assert counts() == before
