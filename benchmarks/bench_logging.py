"""What logging costs: the default run with the default logger vs the same run with nothing logged.

Issue #11's budget: the visuals at their default periods cost under 5 % of a default run's wall
time. Each run is its own ``python -m convtrain`` process (same seed, so the same training
work), the two settings alternate round by round so load drifts hit both, and the script prints
the medians and their ratio for

- the training wall time the run records (``metrics.json`` ``wall_time_s``: the epoch loop with
  its hooks, i.e. what logging slows down), and
- the whole process (start-up, data loading and the final flush included).

    python benchmarks/bench_logging.py [--rounds 5] [-- extra overrides...]

For figures that represent users' machines, run it as the developers' guide says (``env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...``); the BLAS kernel in use is printed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["logger.tensorboard=false", "logger.png=false"]


def one_run(workdir: Path, name: str, overrides: list[str]) -> tuple[float, float]:
    run_dir = workdir / name
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "convtrain", f"hydra.run.dir={run_dir}",
                    "trainer.progress=false", *overrides], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process_s = time.perf_counter() - start
    return json.loads((run_dir / "metrics.json").read_text())["wall_time_s"], process_s


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
        import numpy  # noqa: F401, PLC0415
    except ImportError:
        return "unknown"
    return ", ".join(f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="extra overrides for both settings")
    args = parser.parse_args()
    print(f"BLAS: {blas_kernel()}; {args.rounds} rounds, settings alternating")
    times: dict[str, list[tuple[float, float]]] = {"logged": [], "quiet": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            order = ("logged", "quiet") if round_ % 2 == 0 else ("quiet", "logged")
            for setting in order:
                extra = QUIET if setting == "quiet" else []
                times[setting].append(one_run(Path(tmp), f"{setting}{round_}",
                                              [*args.overrides, *extra]))
                print(f"round {round_} {setting:6s}: training {times[setting][-1][0]:.2f} s, "
                      f"process {times[setting][-1][1]:.2f} s", flush=True)
    for index, what in ((0, "training wall time"), (1, "process wall time")):
        logged = statistics.median(t[index] for t in times["logged"])
        quiet = statistics.median(t[index] for t in times["quiet"])
        print(f"{what}: logged {logged:.2f} s, quiet {quiet:.2f} s, "
              f"logging costs {100 * (logged / quiet - 1):+.1f} %")


if __name__ == "__main__":
    main()
