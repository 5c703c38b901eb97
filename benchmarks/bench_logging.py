"""What logging costs: the default run with the default logger vs the same run with nothing logged.

Issue #11's budget: the visuals at their default periods cost under 5 % of a default run's wall
time; the heavy views (activation maximisation, top patches, saliency: ``logger.responses``,
at the end of training) are stated apart. Three settings: *quiet* (nothing logged), *periods*
(the default logger without the heavy views) and *default* (the default logger). Each run is
its own ``python -m convtrain`` process (same seed, so the same training work), the settings
rotate round by round so load drifts hit all of them, and the script prints the medians and
the ratios periods/quiet (the budget) and default/periods (the heavy views) for

- the training wall time the run records (``metrics.json`` ``wall_time_s``: the epoch loop with
  its hooks, i.e. what logging slows down), and
- the whole process (start-up, data loading and the final flush included), its wall time and
  its CPU time (user + system, all threads: steadier than wall time on a loaded machine).

    python benchmarks/bench_logging.py [--rounds 6] [-- extra overrides...]
    python benchmarks/bench_logging.py --breakdown [-- extra overrides...]

``--breakdown`` runs the logged setting once in this process with a timer around every
visual's hook moments and the shared work (PNG encoding, PNG files, event records, flushes,
opening and closing the event files) and prints where the logged milliseconds go.

For figures that represent users' machines, run it as the developers' guide says (``env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ...``); the BLAS kernel in use is printed.
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QUIET = ["logger.tensorboard=false", "logger.png=false"]
#: the settings compared: extra overrides of each
SETTINGS = {"quiet": QUIET, "periods": ["logger.responses=false"], "default": []}
#: the visual of the heavy views (activation maximisation, top patches, Grad-CAM): issue #11
#: states their cost apart from the budget of the views at the default periods
HEAVY_VIEWS = "Responses"
#: the TensorBoardWriter methods the breakdown times (add_scalar / add_histogram go through
#: add_scalars / add_histograms)
WRITER_METHODS = ("add_image", "add_histograms", "add_scalars", "add_text", "_add_summary",
                  "flush", "close", "__init__")


def one_run(workdir: Path, name: str, overrides: list[str]) -> tuple[float, float, float]:
    """(training wall time, process wall time, process CPU time: user + system) in seconds."""
    run_dir = workdir / name
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "convtrain", f"hydra.run.dir={run_dir}",
                    "trainer.progress=false", *overrides], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    process_s = time.perf_counter() - start
    return (json.loads((run_dir / "metrics.json").read_text())["wall_time_s"], process_s,
            _children_cpu_s() - cpu_before)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415
        import numpy  # noqa: F401, PLC0415
    except ImportError:
        return "unknown"
    return ", ".join(f"{i.get('internal_api')} {i.get('architecture')}" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "none"


def breakdown(overrides: list[str]) -> None:
    """One logged run in this process, every visual's hook moments and the shared writing work
    timed; prints milliseconds and shares of the run's training wall time."""
    from convtrain.app import cli  # noqa: PLC0415
    from convtrain.training.hooks import Hook  # noqa: PLC0415
    from convtrain.visuals import hook as hook_module  # noqa: PLC0415
    from convtrain.visuals.run_logger import VisualLogger  # noqa: PLC0415
    from convtrain.visuals.settings import VISUAL_HOOKS  # noqa: PLC0415
    from convtrain.visuals.tensorboard import TensorBoardWriter  # noqa: PLC0415

    spent: dict[str, float] = collections.defaultdict(float)  # wall seconds
    cpu: dict[str, float] = collections.defaultdict(float)  # CPU seconds of the loop's thread
    calls: collections.Counter[str] = collections.Counter()
    depth = collections.Counter()  # a writer's flush / close also flushes its children

    def timed(label: str, fn):  # noqa: ANN001, ANN202
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            depth[label] += 1
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[label] -= 1
                if depth[label] == 0:
                    spent[label] += time.perf_counter() - start
                    cpu[label] += time.thread_time() - start_cpu
                    calls[label] += 1
        return wrapper

    # what one timed call costs the timers themselves (4 clock reads; CPU-time clocks are
    # system calls): each timed call inside the VisualLogger's moments adds it to their total
    def noop() -> None:
        pass

    timed_noop = timed("calibration", noop)
    samples = []
    for _ in range(5):
        start_wall, start_cpu = time.perf_counter(), time.thread_time()
        for _ in range(20_000):
            timed_noop()
        mid_wall, mid_cpu = time.perf_counter(), time.thread_time()
        for _ in range(20_000):
            noop()
        end_wall, end_cpu = time.perf_counter(), time.thread_time()
        samples.append(((mid_wall - start_wall) - (end_wall - mid_wall),
                        (mid_cpu - start_cpu) - (end_cpu - mid_cpu)))
    timer_wall = statistics.median(w for w, _ in samples) / 20_000
    timer_cpu = statistics.median(c for _, c in samples) / 20_000
    for table in (spent, cpu, calls):
        table.pop("calibration", None)

    # The first Python code after a training step runs slowly: its caches are cold, and
    # (in some spells) the step's BLAS threads still hold the CPU. Whatever code comes first
    # pays that, with or without logging, so a no-op runs first at every batch end (a
    # control, reported apart) and the visuals are measured after it.
    from convtrain.training.trainer import Trainer  # noqa: PLC0415

    def after_step(moment: str) -> None:
        sum(range(10))

    control = timed("control", after_step)
    call_hooks = Trainer._call_hooks

    def call_hooks_after_control(self, moment: str) -> None:  # noqa: ANN001
        if moment == "on_train_batch_end":
            control(moment)
        call_hooks(self, moment)

    Trainer._call_hooks = call_hooks_after_control

    moments = ("on_fit_start", "on_epoch_start", "on_train_batch_end", "on_epoch_end",
               "on_fit_end")
    for cls in VISUAL_HOOKS:  # only overridden moments: the logger skips the others per batch
        for moment in moments:
            if getattr(cls, moment) is not getattr(Hook, moment):
                setattr(cls, moment, timed(f"visual {cls.__name__}", getattr(cls, moment)))
    for moment in moments:
        setattr(VisualLogger, moment, timed("VisualLogger", getattr(VisualLogger, moment)))
    hook_module.encode_png = timed("png encoding", hook_module.encode_png)
    hook_module.VisualContext.write_image = timed("write_image",
                                                  hook_module.VisualContext.write_image)
    for name in WRITER_METHODS:
        setattr(TensorBoardWriter, name, timed(f"writer.{name}", getattr(TensorBoardWriter, name)))

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        sys.argv = ["convtrain", f"hydra.run.dir={run_dir}", "trainer.progress=false",
                    *overrides]
        try:
            cli.main()
        except SystemExit as exc:
            if exc.code:
                raise
        wall = json.loads((run_dir / "metrics.json").read_text())["wall_time_s"]

    def line(label: str, key: str | tuple[str, ...], count: bool = True) -> None:
        keys = (key,) if isinstance(key, str) else key
        sign = [1] + [-1] * (len(keys) - 1)  # the first, less the others
        wall_s = sum(s * spent[k] for s, k in zip(sign, keys))
        cpu_s = sum(s * cpu[k] for s, k in zip(sign, keys))
        print(f"  {label:46s} {1000 * wall_s:7.1f} ms {1000 * cpu_s:7.1f} ms "
              f"{100 * cpu_s / wall:5.1f} % {calls[keys[0]] if count else '':6}")

    # While the hooks run, training waits: the CPU time of the loop's thread in them is the
    # cost. Their wall time is not: the first Python code after a training step waits ~0.14 ms
    # for the CPU (the step's BLAS threads still hold it), a no-op in that place measured 178
    # ms of wall and 10 ms of CPU over the default run's 1,230 batches, so the per-batch
    # moments' wall time is mostly that wait, which training pays with or without logging.
    print(f"training wall time {wall:.2f} s; per item: wall ms, CPU ms of the loop's thread "
          f"(the cost), that CPU time in % of the training wall time, calls")
    visuals = sorted((k for k in spent if k.startswith("visual ")), key=lambda k: -spent[k])
    line("VisualLogger, all moments", "VisualLogger")
    for key in visuals:
        line(f"  {key}", key)
    line("  the logger itself (open, text, flush, close)", ("VisualLogger", *visuals), False)
    # the timers of the calls nested in the VisualLogger's moments (visuals, shared work)
    nested = sum(n for label, n in calls.items() if label not in ("VisualLogger", "control"))
    spent["timers"], cpu["timers"] = nested * timer_wall, nested * timer_cpu
    line("  the timers' own cost, taken out below", "timers", False)
    line("at the default periods (all but the heavy views)",
         ("VisualLogger", f"visual {HEAVY_VIEWS}", "timers"), False)
    line("the heavy views (at the end of training)", f"visual {HEAVY_VIEWS}")
    line("control: a no-op before the hooks after each step", "control")
    print(f"(timers: {1e6 * timer_cpu:.1f} us of CPU, {1e6 * timer_wall:.1f} us of wall per "
          f"timed call, {nested} calls nested in the logger's moments)")
    print("shared work, included above:")
    line("write_image (encode, record, PNG file)", "write_image")
    line("  PNG encoding", "png encoding")
    line("  image records", "writer.add_image")
    line("  PNG files (the rest)", ("write_image", "png encoding", "writer.add_image"), False)
    for name in WRITER_METHODS:
        if name != "add_image":  # above
            line(f"writer.{name}", f"writer.{name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--breakdown", action="store_true",
                        help="one logged run in this process: where the logged time goes")
    parser.add_argument("overrides", nargs="*", help="extra overrides for both settings")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.overrides)
        return
    print(f"BLAS: {blas_kernel()}; {args.rounds} rounds, settings rotating")
    names = list(SETTINGS)
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            shift = round_ % len(names)
            for setting in names[shift:] + names[:shift]:
                times[setting].append(one_run(Path(tmp), f"{setting}{round_}",
                                              [*args.overrides, *SETTINGS[setting]]))
                print(f"round {round_} {setting:7s}: training {times[setting][-1][0]:.2f} s, "
                      f"process {times[setting][-1][1]:.2f} s, "
                      f"CPU {times[setting][-1][2]:.2f} s", flush=True)
    # CPU time (all threads) is the steadier figure on a loaded machine; wall time is what the
    # budget is about
    for index, what in ((0, "training wall time"), (1, "process wall time"),
                        (2, "process CPU time")):
        quiet, periods, default = (statistics.median(t[index] for t in times[name])
                                   for name in names)
        print(f"{what}: quiet {quiet:.2f} s, periods {periods:.2f} s, default {default:.2f} s; "
              f"the default periods cost {100 * (periods / quiet - 1):+.1f} % (budget: 5 %), "
              f"the heavy views {1000 * (default - periods):+.0f} ms")

if __name__ == "__main__":
    main()
