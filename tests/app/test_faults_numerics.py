"""Floating-point warnings and the engine's worker threads.

NumPy's error settings (``np.errstate`` / ``np.seterr``) are per thread: the trainer silences
overflow warnings on the way to a diverging loss, and the engine's worker threads must obey
the same settings, or a diverging run prints NumPy warnings from the workers before its one
line (issue #13)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from convtrain import runtime
from convtrain.runtime import threads


@pytest.fixture
def two_threads():
    before = runtime.get_num_threads()
    runtime.set_num_threads(2)
    yield
    runtime.set_num_threads(before)


def overflow_in(seen: list[str]):
    """Parts that record which thread ran them; part 1 (a worker's: the caller runs part 0
    itself) overflows on purpose."""
    def part(k: int, lo: int, hi: int) -> None:
        seen.append(threading.current_thread().name)
        if k == 1:
            np.float32(3e38) * np.float32(10)
    return part


def test_worker_threads_raise_under_the_callers_errstate(two_threads):
    seen: list[str] = []
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        threads.run_parts(overflow_in(seen), [(0, 1), (1, 2)])
    assert any(name.startswith("convtrain-engine") for name in seen), seen


def test_worker_threads_are_silent_under_the_callers_errstate(two_threads, recwarn):
    seen: list[str] = []
    with np.errstate(over="ignore"):
        threads.run_parts(overflow_in(seen), [(0, 1), (1, 2)])
    assert any(name.startswith("convtrain-engine") for name in seen), seen
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    with np.errstate(over="warn"), pytest.warns(RuntimeWarning, match="overflow"):
        # the settings follow the caller back: a worker does not keep the last ones
        threads.run_split(lambda lo, hi: overflow_in([])(lo, lo, hi), 2,
                          threads.MIN_PARALLEL_BYTES)


def test_a_diverging_run_with_two_engine_threads_prints_one_line(tmp_path):
    """Batches of 512 with 64 filters are large enough for the threaded GEMM paths, where the
    overflow happens first."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run(
        [sys.executable, "-m", "convtrain", "trainer.max_epochs=1", "optimizer.lr=1e6",
         "engine.num_threads=2", "trainer.batch_size=512", "model.layers.conv1.filters=64",
         "trainer.progress=false", "hydra.run.dir=D"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if "[INFO]" not in ln]
    assert line.startswith("convtrain: error: training diverged: the loss became nan"), line
