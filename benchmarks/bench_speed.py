"""convtrain vs PyTorch on the CPU, and convtrain before vs after: each side in its own process.

    python benchmarks/bench_speed.py                   # everything, this tree against torch
    python benchmarks/bench_speed.py --only conv,pool  # a subset: gemm conv pool step resnet20
                                                       #   epoch memory
    python benchmarks/bench_speed.py --convtrain before=/work/wt-base --convtrain after=. \\
        --repeats 9 --markdown results.md              # before/after and torch in one run
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_speed.py ...
                                                       # NumPy's own BLAS kernel (see below)

Sides are ``torch`` (when installed; ``--no-torch`` leaves it out) and one or more convtrain
source trees (``--convtrain NAME=PATH``, default: this tree). This driver imports neither
library: each round it starts one process per side (benchmarks/bench_worker.py, same Python,
the tree first on ``sys.path``), which warms up, times a block of calls of every selected case
and prints JSON. The driver keeps each round's median per case and prints, per case and side,
the median over rounds with its min-max, the ratio to torch (time: < 1 means faster;
images/s: > 1 means faster) and the ratio to the FIRST convtrain side (after/before).

Cases (issue #3): the machine's sgemm peak (a 2048^3 float32 matmul: NumPy in a convtrain
process, torch.mm in torch's), conv2d forward and forward+backward (a)-(e) with GFLOP/s and
their share of that side's sgemm peak, max-pool 2x2 forward+backward, a LeNet-5 training step
(batch 128), a ResNet-20 training step (issue #14: batch 128 of 28x28x1 images, the
Fashion-MNIST shape; convtrain's model is configs/model/resnet20.yaml composed as the CLI does,
``convtrain.model_config``, torch's the same network in torch.nn with the same weights; a tree
without ``model_config``, from before commit 040e66c, skips this case and says so), whole epochs of 60,000 28x28 images (Fashion-MNIST from
/usr/share/datasets/fashion-mnist if present, else random; images/s and the process's peak RSS
per epoch, so growth across epochs shows), and layer (e)'s peak memory at batch 64 under
workspace limits none/256/64 MiB (convtrain only, one fresh process per limit).

Why one process per side: PyTorch's OpenMP threads and convtrain's threads (and OpenBLAS's)
slow each other down when both live in one process: torch's conv (d) took 48.9 ms inside the
old one-process benchmark and 26.9 ms alone, which flattered convtrain's ratios. In a process
of its own each side runs as its users run it. The same goes for two convtrain trees: each
child imports exactly one (an editable install's finder is removed, and every loaded convtrain
module is checked to come from the given tree), and each tree may have either package layout
(``convtrain.engine`` before issue #10's house move, ``convtrain.ops``/``runtime``/``nn`` after).

Why alternated rounds and medians: the machine is shared and noisy. A round runs every side
once, in an order rotated from round to round, so a busy spell hits all sides alike and no side
always runs first; per-round medians are robust to single slow calls, and the min-max over
rounds shows how much the machine moved. Inside a child, each case gets two unrecorded warm-up
calls and then a block of calls lasting at least ``--block-seconds`` (and at least 3 calls):
a block measured as a count of calls derived from a slow warm-up was mostly cold calls and made
(b)'s median swing 1.4-1.6x between runs. Both sides are timed the same way, with the same
inputs (fixed NumPy seeds, copied into torch), the same thread count (``--threads``) and the
same glibc malloc settings (convtrain's ``keep_freed_memory``, which its trainer turns on;
``--no-keep-freed-memory`` leaves glibc's defaults on every side). The driver warns when other
processes keep the CPUs busy, and ``--wait-idle S`` waits for idle CPUs before each child.

BLAS kernel: NumPy's OpenBLAS picks a kernel for the CPU unless ``OPENBLAS_CORETYPE`` forces
one; a workplace that sets ``OPENBLAS_CORETYPE=Haswell`` and ``OPENBLAS_L2_SIZE`` puts NumPy on
AVX2 kernels (sgemm 217 GFLOP/s against 385 with the kernel picked on an AMD EPYC). Figures that
represent users are measured with both unset for that command only (``env -u ...`` above);
every child reports its BLAS kernel (threadpoolctl) and these variables, and the driver prints
them. Report both settings where they differ. Never change them in tests or CI.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_cases as cases  # this script's directory is sys.path[0]

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().with_name("bench_worker.py")
PARTS = ("gemm", "conv", "pool", "step", "resnet20", "epoch", "memory")


@dataclass
class Side:
    """One measured side: ``torch``, or a convtrain source tree under a name of its own."""

    name: str
    tree: Path | None = None  # None: torch
    info: dict[str, Any] = field(default_factory=dict)
    round_medians: dict[str, list[float]] = field(default_factory=dict)  # case -> s per round
    calls: dict[str, list[list[float]]] = field(default_factory=dict)  # case -> rounds' calls
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one entry per round
    memory: dict[str, dict[str, Any]] = field(default_factory=dict)  # limit -> result
    skipped: dict[str, str] = field(default_factory=dict)  # case -> why this side cannot run it

    @property
    def is_torch(self) -> bool:
        return self.tree is None

    def median(self, case_id: str) -> float:
        return statistics.median(self.round_medians[case_id])


# ----------------------------------------------------------------------------- the machine
def cpu_busy_percent(seconds: float = 1.0) -> float:
    """Share of all CPUs busy (any process) over ``seconds``, from /proc/stat (Linux)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
        return sum(values), values[3] + values[4]
    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 100.0 * (1 - (idle1 - idle0) / max(1, total1 - total0))


def wait_idle(max_wait: float, busy_below: float = 15.0) -> None:
    """Wait (at most ``max_wait`` s) until the CPUs are idle, so that another process's burst
    (the machine is shared) does not land inside a child; warn when they never became idle."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    busy = cpu_busy_percent(0.5)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy_percent(0.5)
    if busy >= busy_below:
        print(f"WARNING: CPUs still {busy:.0f}% busy after waiting {max_wait:.0f} s", flush=True)


def git_revision(tree: Path) -> str:
    """``abc1234`` (``+ uncommitted changes`` when the work tree differs), or ``not a git tree``."""
    try:
        head = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(tree), "diff", "--quiet", "HEAD", "--",
                                "convtrain"], capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "not a git tree"
    return head + (" + uncommitted changes in convtrain/" if dirty else "")


# ----------------------------------------------------------------------------- children
@dataclass
class Settings:
    python: str
    threads: int
    block_seconds: float
    keep_freed_memory: bool
    data_dir: Path | None
    wait_idle: float


def run_child(side: Side, settings: Settings, work: list[str]) -> dict[str, Any]:
    """Run bench_worker.py for ``side`` with the arguments ``work``; its JSON result."""
    command = [settings.python, str(WORKER), "--side", "torch" if side.is_torch else "convtrain",
               "--threads", str(settings.threads), "--block-seconds", str(settings.block_seconds)]
    if side.tree is not None:
        command += ["--tree", str(side.tree)]
    if not settings.keep_freed_memory:
        command.append("--no-keep-freed-memory")
    if settings.data_dir is not None:
        command += ["--data-dir", str(settings.data_dir)]
    wait_idle(settings.wait_idle)
    done = subprocess.run(command + work, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(cases.JSON_PREFIX)]
    if done.returncode != 0 or not lines:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"bench_speed: the {side.name} process failed (exit {done.returncode}):"
                         f" {' '.join(command + work)}")
    result = json.loads(lines[-1][len(cases.JSON_PREFIX):])
    if not side.info:
        side.info = result["info"]
    elif result["info"]["blas"] != side.info["blas"]:
        print(f"WARNING: {side.name}'s BLAS changed between its processes: "
              f"{result['info']['blas']}", flush=True)
    return result


def rotated(sides: list[Side], round_index: int) -> list[Side]:
    """The sides in this round's order: rotated each round, so no side always runs first."""
    shift = round_index % len(sides)
    return sides[shift:] + sides[:shift]


def run_timed_rounds(sides: list[Side], settings: Settings, case_ids: list[str],
                     repeats: int) -> None:
    for round_index in range(repeats):
        took = []
        for side in rotated(sides, round_index):
            t0 = time.monotonic()
            result = run_child(side, settings, ["--cases", ",".join(case_ids)])
            side.skipped.update(result.get("skipped", {}))
            for case_id, times in result["cases"].items():
                side.round_medians.setdefault(case_id, []).append(statistics.median(times))
                side.calls.setdefault(case_id, []).append(times)
            took.append(f"{side.name} {time.monotonic() - t0:.1f} s")
        print(f"round {round_index + 1}/{repeats}: {', '.join(took)}", flush=True)


def run_epoch_rounds(sides: list[Side], settings: Settings, rounds: int, epochs: int,
                     images: int) -> None:
    for round_index in range(rounds):
        for side in rotated(sides, round_index):
            work = ["--epochs", str(epochs), "--epoch-images", str(images)]
            side.epochs.append(run_child(side, settings, work)["epoch"])
        print(f"epoch round {round_index + 1}/{rounds} done", flush=True)


def run_memory(sides: list[Side], settings: Settings, limits: list[str]) -> None:
    for side in sides:
        if not side.is_torch:
            for limit in limits:
                side.memory[limit] = run_child(side, settings, ["--memory-limit", limit])["memory"]


# ----------------------------------------------------------------------------- report
def ms_range(values_s: list[float]) -> str:
    return (f"{1e3 * statistics.median(values_s):9.2f} ms "
            f"({1e3 * min(values_s):.2f}-{1e3 * max(values_s):.2f})")


def ratio_columns(sides: list[Side]) -> list[tuple[Side, Side]]:
    """(numerator, denominator) pairs: every convtrain side against torch, and every later
    convtrain side against the first one (after/before)."""
    torch_side = next((s for s in sides if s.is_torch), None)
    ours = [s for s in sides if not s.is_torch]
    pairs = [(s, torch_side) for s in ours] if torch_side else []
    return pairs + [(s, ours[0]) for s in ours[1:]]


def sgemm_peak(side: Side) -> float | None:
    """The side's median sgemm GFLOP/s in this run (its own BLAS), or None if not measured."""
    if "gemm" not in side.round_medians:
        return None
    return cases.case_flops("gemm") / side.median("gemm") / 1e9


def timed_rows(sides: list[Side], case_ids: list[str]) -> list[dict[str, Any]]:
    rows = []
    for case_id in case_ids:
        row: dict[str, Any] = {"case": cases.case_title(case_id), "sides": {}, "ratios": {}}
        flops = cases.case_flops(case_id)
        images = cases.case_images(case_id)
        for side in sides:
            if case_id not in side.round_medians:
                row["sides"][side.name] = {"skipped": side.skipped.get(case_id, "not measured")}
                continue
            medians = side.round_medians[case_id]
            entry = {"median_ms": 1e3 * statistics.median(medians), "min_ms": 1e3 * min(medians),
                     "max_ms": 1e3 * max(medians)}
            if images:
                entry["images_per_s"] = images / statistics.median(medians)
            if flops:
                entry["gflops"] = flops / statistics.median(medians) / 1e9
                peak = sgemm_peak(side)
                if peak and case_id != "gemm":
                    entry["peak_fraction"] = entry["gflops"] / peak
            row["sides"][side.name] = entry
        for top, bottom in ratio_columns(sides):
            if case_id in top.round_medians and case_id in bottom.round_medians:
                ratio = top.median(case_id) / bottom.median(case_id)
                row["ratios"][f"{top.name}/{bottom.name}"] = ratio
        rows.append(row)
    return rows


def epoch_row(sides: list[Side], images: int) -> dict[str, Any]:
    row: dict[str, Any] = {"case": f"LeNet-5 epoch {images / 1000:g}k b{cases.STEP_BATCH} "
                                   f"(images/s)",
                           "source": sides[0].epochs[0]["source"], "sides": {}, "ratios": {}}
    throughput = {}
    for side in sides:
        per_round = [statistics.median(r["images_per_s"]) for r in side.epochs]
        throughput[side.name] = statistics.median(per_round)
        row["sides"][side.name] = {
            "images_per_s": throughput[side.name], "min": min(per_round), "max": max(per_round),
            "peak_rss_mb": max(max(r["peak_rss_mb"]) for r in side.epochs),
            # growth of the process's peak from its first epoch to its last, worst round
            "rss_growth_mb": max(r["peak_rss_mb"][-1] - r["peak_rss_mb"][0] for r in side.epochs),
            "peak_rss_per_epoch": [r["peak_rss_mb"] for r in side.epochs]}
    for top, bottom in ratio_columns(sides):
        row["ratios"][f"{top.name}/{bottom.name}"] = throughput[top.name] / throughput[bottom.name]
    return row


def memory_rows(sides: list[Side]) -> list[dict[str, Any]]:
    rows = []
    for side in sides:
        for limit, r in side.memory.items():
            rows.append({"case": f"memory (e) b64 fwd+bwd, limit {limit} MB", "side": side.name,
                         **r})
    return rows


def print_report(sides: list[Side], rows: list[dict[str, Any]], epoch: dict | None,
                 memory: list[dict[str, Any]]) -> None:
    width = max(len(s.name) for s in sides)
    for row in rows:
        print(f"\n{row['case']}")
        for side in sides:
            entry = row["sides"][side.name]
            if "skipped" in entry:
                print(f"  {side.name:<{width}} skipped: {entry['skipped']}")
                continue
            line = (f"  {side.name:<{width}} {entry['median_ms']:9.2f} ms "
                    f"({entry['min_ms']:.2f}-{entry['max_ms']:.2f})")
            if "images_per_s" in entry:
                line += f" {entry['images_per_s']:7.0f} img/s"
            line += "".join(f"  {value:5.2f}x {key.split('/')[1]}"
                            for key, value in row["ratios"].items()
                            if key.split("/")[0] == side.name)
            if "gflops" in entry:
                line += f"  {entry['gflops']:6.1f} GFLOP/s"
            if "peak_fraction" in entry:
                line += f" ({100 * entry['peak_fraction']:.0f}% of its sgemm peak)"
            print(line)
    if epoch:
        print(f"\n{epoch['case']}, {epoch['source']}; ratios are throughput (> 1: faster)")
        for side in sides:
            e = epoch["sides"][side.name]
            ratios = "".join(f"  {value:5.2f}x {key.split('/')[1]}"
                             for key, value in epoch["ratios"].items()
                             if key.split("/")[0] == side.name)
            per_epoch = " | ".join("/".join(f"{v:.0f}" for v in r) for r in e["peak_rss_per_epoch"])
            print(f"  {side.name:<{width}} {e['images_per_s']:8.0f} img/s ({e['min']:.0f}-"
                  f"{e['max']:.0f}){ratios}  process peak RSS {e['peak_rss_mb']:.0f} MB, growth "
                  f"over a process's epochs {e['rss_growth_mb']:+.0f} MB (by epoch: {per_epoch})")
    if memory:
        print()
        for r in memory:
            workspace = ("?" if r["workspace_mb"] is None else f"{r['workspace_mb']:.0f}")
            print(f"{r['case']:<38} {r['side']:<{width}} peak +{r['peak_mb']:.0f} MB RSS over x "
                  f"and dy (y + dx alone {r['inherent_mb']:.0f} MB, workspace {workspace} MB), "
                  f"{r['ms']:.0f} ms")


def write_markdown(path: str, header: list[str], sides: list[Side], rows: list[dict[str, Any]],
                   epoch: dict | None, memory: list[dict[str, Any]]) -> None:
    ratio_keys = [f"{a.name}/{b.name}" for a, b in ratio_columns(sides)]
    lines = [*(f"- {h}" for h in header), "",
             "| case | " + " | ".join(f"{s.name} (median, min-max over rounds)" for s in sides)
             + "".join(f" | {k}" for k in ratio_keys) + " |",
             "|---" * (1 + len(sides) + len(ratio_keys)) + "|"]
    for row in rows:
        cells = []
        for side in sides:
            e = row["sides"][side.name]
            if "skipped" in e:
                cells.append(f"skipped: {e['skipped']}")
                continue
            cell = f"{e['median_ms']:.2f} ms ({e['min_ms']:.2f}-{e['max_ms']:.2f})"
            if "images_per_s" in e:
                cell += f", {e['images_per_s']:.0f} img/s"
            if "gflops" in e:
                cell += f", {e['gflops']:.1f} GFLOP/s"
            if "peak_fraction" in e:
                cell += f" ({100 * e['peak_fraction']:.0f}%)"
            cells.append(cell)
        cells += [f"{row['ratios'][k]:.2f}" if k in row["ratios"] else "-" for k in ratio_keys]
        lines.append(f"| {row['case']} | " + " | ".join(cells) + " |")
    if epoch:
        cells = [f"{e['images_per_s']:.0f} img/s ({e['min']:.0f}-{e['max']:.0f}), peak RSS "
                 f"{e['peak_rss_mb']:.0f} MB, growth {e['rss_growth_mb']:+.0f} MB"
                 for e in (epoch["sides"][s.name] for s in sides)]
        cells += [f"{epoch['ratios'][k]:.2f} (throughput)" for k in ratio_keys]
        lines.append(f"| {epoch['case']} | " + " | ".join(cells) + " |")
    for r in memory:
        cells = ["" for _ in sides] + ["" for _ in ratio_keys]
        workspace = "?" if r["workspace_mb"] is None else f"{r['workspace_mb']:.0f}"
        cells[[s.name for s in sides].index(r["side"])] = (
            f"peak +{r['peak_mb']:.0f} MB RSS (workspace {workspace} MB; y + dx alone "
            f"{r['inherent_mb']:.0f} MB), {r['ms']:.0f} ms")
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    if epoch:
        lines += ["", f"Epoch data: {epoch['source']}."]
    lines += ["", "Times are medians over rounds of each round's median; GFLOP/s count a fwd+bwd "
              "as 3 forwards; % is of the same side's sgemm peak in this run; img/s of a "
              "training step is its batch over its median time. Memory rows are single "
              "processes (median of 3 calls)."]
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


# ----------------------------------------------------------------------------- main
def parse_sides(parser: argparse.ArgumentParser, specs: list[str], no_torch: bool,
                python: str) -> list[Side]:
    sides = []
    if not no_torch:
        has_torch = subprocess.run([python, "-c", "import importlib.util, sys; sys.exit("
                                    "importlib.util.find_spec('torch') is None)"]).returncode == 0
        if has_torch:
            sides.append(Side("torch"))
        else:
            print("torch is not installed for this Python: convtrain's figures alone", flush=True)
    for spec in specs or [f"convtrain={ROOT}"]:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error(f"--convtrain {spec!r}: expected NAME=PATH, e.g. before=/work/wt-base")
        tree = Path(path).expanduser().resolve()
        if not (tree / "convtrain" / "__init__.py").is_file():
            parser.error(f"--convtrain {spec!r}: {tree} has no convtrain/__init__.py")
        if name in [s.name for s in sides] or name == "torch":
            parser.error(f"--convtrain {spec!r}: the name {name!r} is taken")
        sides.append(Side(name, tree))
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--convtrain", action="append", default=[], metavar="NAME=PATH",
                        help="a convtrain source tree to measure (repeat for before/after; "
                             "ratios are taken against the first); default: this tree")
    parser.add_argument("--no-torch", action="store_true", help="measure convtrain alone")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma list of: {' '.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=11,
                        help="rounds of the timed cases (one process per side per round)")
    parser.add_argument("--conv-cases", default="".join(cases.CONV_CASES),
                        help="which conv cases, e.g. 'bd'")
    parser.add_argument("--block-seconds", type=float, default=0.25,
                        help="each case's block of timed calls lasts at least this long")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process for 'epoch'")
    parser.add_argument("--epoch-rounds", type=int, default=2,
                        help="rounds of 'epoch' (one process per side per round)")
    parser.add_argument("--epoch-images", type=int, default=cases.EPOCH_IMAGES,
                        help="images per epoch (fewer for a quick rehearsal)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads of every side (torch intra-op, convtrain engine)")
    parser.add_argument("--memory-limits", default="none,256,64",
                        help="workspace limits (MiB, 'none') for the memory case")
    parser.add_argument("--data-dir", type=Path, help="Fashion-MNIST IDX files for 'epoch' "
                        "(default /usr/share/datasets/fashion-mnist; random images if absent)")
    parser.add_argument("--markdown", help="also write the results table to this file")
    parser.add_argument("--json", help="also write every measurement (each call) to this file")
    parser.add_argument("--no-keep-freed-memory", action="store_true",
                        help="leave glibc malloc's defaults on every side (freed memory goes "
                             "back to the OS)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="before each process, wait up to S seconds for idle CPUs (for a "
                             "machine shared with other jobs)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter of every child (default: this one)")
    args = parser.parse_args()

    parts = {p for p in args.only.split(",") if p}
    if not parts:
        parser.error(f"--only: give at least one of {', '.join(PARTS)}")
    for bad in sorted(parts - set(PARTS)):
        parser.error(f"--only: unknown part {bad!r} (choose from {', '.join(PARTS)})")
    for bad in sorted(set(args.conv_cases) - set(cases.CONV_CASES)):
        parser.error(f"--conv-cases: unknown case {bad!r} (choose from "
                     f"{''.join(cases.CONV_CASES)})")
    for name in ("repeats", "epochs", "epoch_rounds", "epoch_images", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    sides = parse_sides(parser, args.convtrain, args.no_torch, args.python)
    settings = Settings(args.python, args.threads, args.block_seconds,
                        not args.no_keep_freed_memory, args.data_dir, args.wait_idle)

    started = time.monotonic()
    busy = cpu_busy_percent()
    if busy > 10:
        print(f"WARNING: the CPUs were {busy:.0f}% busy before starting: other processes "
              f"distort these timings", flush=True)
    case_ids = cases.timed_case_ids(parts, args.conv_cases)
    if case_ids:
        run_timed_rounds(sides, settings, case_ids, args.repeats)
    if "epoch" in parts:
        run_epoch_rounds(sides, settings, args.epoch_rounds, args.epochs, args.epoch_images)
    if "memory" in parts:
        run_memory(sides, settings, args.memory_limits.split(","))

    header = [f"driver: python {platform.python_version()} ({args.python}) | {os.cpu_count()} "
              f"cpus | {platform.processor() or platform.machine()} | {args.threads} threads "
              f"per side | glibc keeps freed memory: {not args.no_keep_freed_memory} | "
              f"{args.repeats} rounds, blocks >= {args.block_seconds} s"]
    for side in sides:
        if not side.info:
            continue
        env = ", ".join(f"{k}={v}" if v is not None else f"{k} unset"
                        for k, v in side.info["openblas_env"].items())
        where = "" if side.is_torch else f" @ {git_revision(side.tree)}"
        header.append(f"{side.name}: {side.info['library']}{where} | {side.info['threads']} "
                      f"threads | {side.info['blas']} | {env}")
    print("\n" + "\n".join(header))
    measured = [s for s in sides if s.info]
    rows = timed_rows(measured, case_ids) if case_ids else []
    epoch = epoch_row(measured, args.epoch_images) if "epoch" in parts else None
    memory = memory_rows(measured)
    print_report(measured, rows, epoch, memory)
    print(f"\ntotal {(time.monotonic() - started) / 60:.1f} min", flush=True)
    if args.markdown:
        write_markdown(args.markdown, header, measured, rows, epoch, memory)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "header": header, "rows": rows, "epoch": epoch, "memory": memory,
            "sides": {s.name: {"info": s.info, "calls_s": s.calls, "epochs": s.epochs}
                      for s in measured}}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
