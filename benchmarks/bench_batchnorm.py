"""Batch norm forward + backward: the reference (convtrain.ops.batchnorm) against the speed
path (convtrain.ops.fast.batchnorm), alternating in one process, float32, training mode.

    python benchmarks/bench_batchnorm.py [--threads 1] [--clock wall|thread] [--repeats 40]

``--clock thread`` times the calling thread's CPU time (time.thread_time): steadier on a busy
machine, but blind to work on the engine's other threads, so use it with ``--threads 1``.
Also prints the tracemalloc peak of one forward + backward (bytes, independent of load).
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from convtrain.ops import batchnorm as reference
from convtrain.ops.fast import batchnorm as fast
from convtrain.runtime.memory import keep_freed_memory
from convtrain.runtime.threads import set_num_threads

SHAPES = [(128, 32, 28, 28), (128, 64, 14, 14)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="engine threads (default 1)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    keep_freed_memory()  # as the trainer does: freed buffers are reused, no page faults
    set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    rng = np.random.default_rng(0)
    sides = (("reference", reference), ("fast", fast))
    for shape in SHAPES:
        c = shape[1]
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        params = (rng.uniform(0.5, 1.5, c).astype(np.float32), np.zeros(c, np.float32),
                  np.zeros(c, np.float32), np.ones(c, np.float32))
        times = {name: ([], []) for name, _ in sides}
        for i in range(args.repeats + 5):
            for name, module in sides:
                t0 = clock()
                _, cache, _, _ = module.batchnorm2d_forward(x, *params)
                t1 = clock()
                module.batchnorm2d_backward(dy, cache)
                t2 = clock()
                if i >= 5:
                    times[name][0].append(t1 - t0)
                    times[name][1].append(t2 - t1)
        peaks = {}
        for name, module in sides:
            tracemalloc.start()
            _, cache, _, _ = module.batchnorm2d_forward(x, *params)
            module.batchnorm2d_backward(dy, cache)
            peaks[name] = tracemalloc.get_traced_memory()[1] / x.nbytes
            tracemalloc.stop()
            del cache
        (rf, rb), (ff, fb) = ([1e3 * float(np.median(t)) for t in times[name]]
                              for name, _ in sides)
        print(f"{shape}: reference fwd {rf:.2f} bwd {rb:.2f} ms | fast fwd {ff:.2f} bwd "
              f"{fb:.2f} ms | reference/fast fwd {rf / ff:.2f} bwd {rb / fb:.2f} | peak "
              f"allocations reference {peaks['reference']:.1f}x, fast {peaks['fast']:.1f}x "
              f"the input ({args.clock} clock, {args.threads} engine thread(s))")


if __name__ == "__main__":
    main()
