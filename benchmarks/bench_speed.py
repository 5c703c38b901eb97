"""convtrain vs PyTorch on the CPU, measured side by side in ONE process.

For every case the two implementations are timed alternately, in short blocks (a few calls of
convtrain, then a few of torch, ...) so that machine noise hits both alike; we print medians,
min-max and the ratio convtrain/torch (< 1 means convtrain is faster). Without torch installed
only convtrain's figures are printed.

    python benchmarks/bench_speed.py                  # everything (a few minutes on 2 cores)
    python benchmarks/bench_speed.py --only conv,pool # a subset: gemm conv pool step epoch memory
    python benchmarks/bench_speed.py --repeats 15 --threads 2 --markdown results.md

Cases (issue #3): conv2d forward and forward+backward (a)-(e), max-pool 2x2 forward+backward,
a LeNet-5 training step (batch 128), one epoch of 60,000 28x28 images (images/s and peak RSS),
the achieved GFLOP/s against this machine's measured sgemm peak, and the peak memory of layer
(e) at batch 64 with and without a workspace limit (each in a fresh subprocess).

Why blocks with a pause between sides: after every GEMM, OpenBLAS's worker threads busy-wait
for ~0.1 s (measured: 0.11 s of CPU during a 0.2 s sleep after one 512x512 matmul) before
sleeping. Timing torch right after a NumPy GEMM therefore gives torch one core instead of two
(its (a) fwd+bwd went from 3.3 ms alone to 9 ms alternated call by call), and the first run of
this script on a loaded machine showed 10x "slowdowns" that were this and plain CPU contention
(OpenBLAS with 2 threads on 2 busy cores stalls at every GEMM barrier). Each block's first call
is a warm-up and not recorded, and the script warns when other processes are using the CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf  # noqa: E402

import convtrain  # noqa: E402
import convtrain.ops.fast.conv as conv_engine  # noqa: E402
from convtrain.ops import keep_freed_memory  # noqa: E402
from convtrain.ops.losses import softmax_cross_entropy  # noqa: E402
from convtrain.nn import Conv2d, MaxPool2d  # noqa: E402
from convtrain.optim import build_optimizer  # noqa: E402

try:
    import torch
except ImportError:  # the benchmark still reports convtrain's own numbers
    torch = None

CONV_CASES = {
    # name: (in, out, H=W, kernel, stride, pad, batch)
    "a 1->6 28x28 k5 p2 b64": (1, 6, 28, 5, 1, 2, 64),
    "b 6->16 14x14 k5 b64": (6, 16, 14, 5, 1, 0, 64),
    "c 32->64 32x32 k3 p1 b64": (32, 64, 32, 3, 1, 1, 64),
    "d 64->128 16x16 k3 p1 b64": (64, 128, 16, 3, 1, 1, 64),
    "e 3->64 224x224 k7 s2 p3 b8": (3, 64, 224, 7, 2, 3, 8),
}


# ----------------------------------------------------------------------------- timing helpers
SETTLE_S = 0.15  # > OpenBLAS's ~0.1 s busy-wait after a GEMM (see the module docstring)


BLOCK_S = 0.1  # a block of calls lasts at least this long (steady state, see alternate)


def alternate(fns: dict[str, Callable[[], None]], repeats: int, block: int = 3,
              warmup: int = 2) -> dict[str, list[float]]:
    """Time each callable ``repeats`` rounds; a round runs a block of calls of each side in
    turn, recording all but the first call of the block, after a pause that lets the other
    side's spinning threads go to sleep.

    A block has at least ``block`` calls and lasts at least ``BLOCK_S``: with only 3 calls of
    a 2-5 ms case, most recorded calls ran right after the 0.15 s pause, with the second CPU
    just woken from idle (on this VM a thread wake-up costs ~50 us and the idle vCPU's caches
    are cold), which measures a cold start rather than the steady state a training loop runs
    in; that penalised whichever side uses more threads, and made the small cases' medians
    swing by 2x between runs."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if len(fns) > 1:
                time.sleep(SETTLE_S)
            fn()  # warm-up call after switching sides
            # Time-based blocks: the call count used to come from the warm-up calls' time,
            # which includes first-call allocations, so a slow warm-up gave short blocks made
            # mostly of the cold calls just after the pause (medians of (b) swung 1.4-1.6x
            # between runs of the same code).
            start = time.perf_counter()
            recorded = 0
            while recorded < block - 1 or time.perf_counter() - start < BLOCK_S:
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
                recorded += 1
    return times


def fmt_ms(ts: list[float]) -> str:
    return f"{1e3 * statistics.median(ts):9.2f} ms ({1e3 * min(ts):.2f}-{1e3 * max(ts):.2f})"


ROWS: list[dict] = []  # every printed result, for --markdown / --json


def report(title: str, times: dict[str, list[float]], flops: float | None = None,
           peak: float | None = None) -> dict:
    ours = statistics.median(times["convtrain"])
    line = f"{title:<38} convtrain {fmt_ms(times['convtrain'])}"
    row = {"case": title, "convtrain_ms": 1e3 * ours,
           "convtrain_min_ms": 1e3 * min(times["convtrain"]),
           "convtrain_max_ms": 1e3 * max(times["convtrain"])}
    if "torch" in times:
        theirs = statistics.median(times["torch"])
        line += f" | torch {fmt_ms(times['torch'])} | ratio {ours / theirs:5.2f}"
        row.update(torch_ms=1e3 * theirs, torch_min_ms=1e3 * min(times["torch"]),
                   torch_max_ms=1e3 * max(times["torch"]), ratio=ours / theirs)
    if flops:
        gflops = flops / ours / 1e9
        line += f" | {gflops:6.1f} GFLOP/s"
        row["gflops"] = gflops
        if peak:
            line += f" ({100 * gflops / peak:3.0f}% of sgemm peak)"
            row["peak_fraction"] = gflops / peak
    print(line, flush=True)
    ROWS.append(row)
    return row


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """Share of all CPUs busy (any process) over ``seconds``, from /proc/stat (Linux)."""
    def sample():
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


WAIT_IDLE_S = 0.0  # --wait-idle: longest wait for idle CPUs before each case


def wait_idle(max_wait: float | None = None, busy_below: float = 15.0) -> None:
    """Wait (at most ``max_wait`` s) until the CPUs are idle, so that another process's burst
    (the machine is shared) does not land inside a case; warn when they never became idle."""
    max_wait = WAIT_IDLE_S if max_wait is None else max_wait
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    busy = cpu_busy_percent(0.5)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = cpu_busy_percent(0.5)
    if busy >= busy_below:
        print(f"WARNING: CPUs still {busy:.0f}% busy after waiting {max_wait:.0f} s",
              flush=True)


def sgemm_peak(repeats: int) -> float:
    """Median GFLOP/s of a 2048^3 float32 NumPy matmul: the machine's practical BLAS peak."""
    a = np.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((2048, 2048), dtype=np.float32)
    times = alternate({"convtrain": lambda: a @ b}, repeats)["convtrain"]
    return 2 * 2048**3 / statistics.median(times) / 1e9


class PeakRSS:
    """Samples this process's resident set size every few ms; ``peak_mb`` above the start."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.base, self._stop = interval, 0, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self):
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return (self.peak - self.base) / 2**20


# ----------------------------------------------------------------------------- cases
def bench_conv(repeats: int, peak: float | None, cases: str = "abcde") -> list[dict]:
    rows = []
    for name, (cin, cout, hw, k, s, p, n) in CONV_CASES.items():
        if name[0] not in cases:
            continue
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, cin, hw, hw), dtype=np.float32)
        layer = Conv2d(cin, cout, k, stride=s, padding=p, rng=rng)
        y = layer.forward(x)
        dy = rng.standard_normal(y.shape, dtype=np.float32)
        fwd_flops = 2.0 * n * cout * y.shape[2] * y.shape[3] * cin * k * k
        fns_f = {"convtrain": lambda: layer.forward(x)}
        fns_fb = {"convtrain": lambda: (layer.forward(x), layer.backward(dy))}
        if torch is not None:
            tconv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p)
            with torch.no_grad():
                tconv.weight.copy_(torch.from_numpy(layer.params["weight"]))
                tconv.bias.copy_(torch.from_numpy(layer.params["bias"]))
            tx = torch.from_numpy(x).requires_grad_(True)
            tdy = torch.from_numpy(dy)

            def t_fwd():
                with torch.no_grad():
                    tconv(tx)

            def t_fb():
                tconv.zero_grad(set_to_none=True)
                tx.grad = None
                tconv(tx).backward(tdy)

            fns_f["torch"], fns_fb["torch"] = t_fwd, t_fb
        wait_idle()
        rows.append(report(f"conv {name} fwd", alternate(fns_f, repeats), fwd_flops, peak))
        wait_idle()
        rows.append(report(f"conv {name} fwd+bwd", alternate(fns_fb, repeats), 3 * fwd_flops, peak))
    return rows


def bench_pool(repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 64, 32, 32), dtype=np.float32)
    pool = MaxPool2d(2, 2)
    dy = rng.standard_normal((64, 64, 16, 16), dtype=np.float32)
    fns = {"convtrain": lambda: (pool.forward(x), pool.backward(dy))}
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_(True)
        tdy = torch.from_numpy(dy)

        def t_fb():
            tx.grad = None
            torch.nn.functional.max_pool2d(tx, 2, 2).backward(tdy)

        fns["torch"] = t_fb
    wait_idle()
    return [report("maxpool 2x2 (64,64,32,32) fwd+bwd", alternate(fns, repeats))]


def lenet5_pair(seed: int = 0):
    """Our LeNet-5 (configs/model/lenet5.yaml) and an identical torch copy with the same weights."""
    cfg = OmegaConf.load(ROOT / "configs" / "model" / "lenet5.yaml")
    model = convtrain.build_model(cfg, (1, 28, 28), seed=seed)
    opt = build_optimizer({"name": "sgd", "lr": 0.01, "momentum": 0.9}, model)
    tmodel = topt = None
    if torch is not None:
        nn = torch.nn
        tmodel = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        names = ["conv1", None, None, "conv2", None, None, None, "fc1", None, "fc2", None, "fc3"]
        sd = model.state_dict()
        with torch.no_grad():
            for mod, name in zip(tmodel, names):
                if name:
                    mod.weight.copy_(torch.from_numpy(sd[f"{name}.weight"]))
                    mod.bias.copy_(torch.from_numpy(sd[f"{name}.bias"]))
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
    return model, opt, tmodel, topt


def our_step(model, opt, x, y) -> float:
    logits = model.forward(x, training=True)
    loss, dlogits = softmax_cross_entropy(logits, y)
    # No gradient w.r.t. the images, exactly like torch (the input does not require grad).
    model.backward(dlogits, input_grad=False)
    opt.step()
    return loss


def torch_step(tmodel, topt, tx, ty) -> float:
    topt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(tmodel(tx), ty)
    loss.backward()
    topt.step()
    return loss.item()


def fashion_or_random(n: int = 60000) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        from convtrain.data import load_dataset

        data = load_dataset({"name": "fashion_mnist", "val_fraction": 0.0}, seed=0)
        return data.train.x[:n], data.train.y[:n], "Fashion-MNIST train"
    except Exception:  # noqa: BLE001 - any missing-data reason: fall back to random images
        rng = np.random.default_rng(0)
        return (rng.standard_normal((n, 1, 28, 28), dtype=np.float32),
                rng.integers(0, 10, n).astype(np.int64), "random 28x28 images")


def bench_step(repeats: int) -> list[dict]:
    model, opt, tmodel, topt = lenet5_pair()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 128).astype(np.int64)
    fns = {"convtrain": lambda: our_step(model, opt, x, y)}
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        fns["torch"] = lambda: torch_step(tmodel, topt, tx, ty)
    wait_idle()
    return [report("LeNet-5 train step b128", alternate(fns, repeats))]


def bench_epoch(epochs: int) -> list[dict]:
    """Images/s over full epochs of 60k images, batch 128, shuffled; alternating sides."""
    x, y, source = fashion_or_random()
    print(f"epoch data: {source}, {len(x)} images", flush=True)
    model, opt, tmodel, topt = lenet5_pair()
    rng = np.random.default_rng(0)
    sides = {"convtrain": {"ips": [], "rss": []}}
    if torch is not None:
        sides["torch"] = {"ips": [], "rss": []}
    for _ in range(epochs):
        for side in sides:
            order = rng.permutation(len(x))
            wait_idle()
            time.sleep(SETTLE_S)
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                for i in range(0, len(x), 128):
                    idx = order[i:i + 128]
                    xb, yb = x[idx], y[idx]
                    if side == "convtrain":
                        our_step(model, opt, xb, yb)
                    else:
                        torch_step(tmodel, topt, torch.from_numpy(xb), torch.from_numpy(yb))
                elapsed = time.perf_counter() - t0
            sides[side]["ips"].append(len(x) / elapsed)
            # Absolute peak RSS of the process during the epoch: equal values across epochs
            # mean no growth (deltas would read 0 once freed memory is kept for reuse).
            sides[side]["rss"].append(mem.peak / 2**20)
    ours = statistics.median(sides["convtrain"]["ips"])
    ours_ips = sides["convtrain"]["ips"]
    line = (f"{'LeNet-5 epoch 60k b128':<38} convtrain {ours:8.0f} img/s "
            f"({min(ours_ips):.0f}-{max(ours_ips):.0f}; process peak RSS "
            f"{max(sides['convtrain']['rss']):.0f} MB, per epoch "
            f"{', '.join(f'{r:.0f}' for r in sides['convtrain']['rss'])})")
    row = {"case": "LeNet-5 epoch 60k b128 (images/s)", "convtrain_ips": ours,
           "convtrain_rss_mb": max(sides["convtrain"]["rss"]),
           "convtrain_rss_per_epoch": sides["convtrain"]["rss"]}
    if "torch" in sides:
        theirs = statistics.median(sides["torch"]["ips"])
        line += (f" | torch {theirs:8.0f} img/s (peak RSS {max(sides['torch']['rss']):.0f} MB)"
                 f" | convtrain/torch throughput {ours / theirs:4.2f}")
        row.update(torch_ips=theirs, throughput_ratio=ours / theirs,
                   torch_rss_mb=max(sides["torch"]["rss"]))
    print(line, flush=True)
    ROWS.append(row)
    return [row]


# ----------------------------------------------------------------------------- memory
MEMORY_CASE = (3, 64, 224, 7, 2, 3, 64)  # layer (e) at batch 64


def memory_child(limit: str) -> None:
    """Run in a fresh process: forward+backward of layer (e) at batch 64 under ``limit`` MiB
    (``none`` = unlimited); print JSON with the peak RSS above the inputs/outputs' own size."""
    import json
    import resource

    from convtrain.ops import set_max_workspace_mb

    if limit == "none":  # the unchunked behaviour: no limit and no cache-sized chunks
        set_max_workspace_mb(None)
        conv_engine._TARGET_CHUNK_BYTES = None
    else:
        set_max_workspace_mb(float(limit))
    cin, cout, hw, k, s, p, n = MEMORY_CASE
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, hw, hw), dtype=np.float32)
    layer = Conv2d(cin, cout, k, stride=s, padding=p, rng=rng)
    oh = (hw + 2 * p - k) // s + 1
    dy = rng.standard_normal((n, cout, oh, oh), dtype=np.float32)
    base = PeakRSS.rss()
    times = []
    with PeakRSS(interval=0.002) as mem:
        for _ in range(3):
            t0 = time.perf_counter()
            y = layer.forward(x)  # kept alive, as a model keeps its activations
            dx = layer.backward(dy)
            times.append(time.perf_counter() - t0)
            del y, dx
    inherent = (dy.nbytes + x.nbytes) / 2**20  # y and dx, on top of x and dy (in the base)
    print(json.dumps({"limit": limit, "peak_mb": (mem.peak - base) / 2**20,
                      "inherent_mb": inherent, "workspace_mb": layer.workspace.nbytes / 2**20,
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "ms": 1e3 * statistics.median(times)}))


def bench_memory(limits: list[str]) -> list[dict]:
    import json
    import subprocess

    rows = []
    for limit in limits:
        out = subprocess.run([sys.executable, __file__, "--memory-child", limit],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        title = f"memory (e) b64 fwd+bwd, limit {limit} MB"
        print(f"{title:<38} peak +{r['peak_mb']:.0f} MB RSS over x and dy (y + dx alone "
              f"{r['inherent_mb']:.0f} MB, workspace {r['workspace_mb']:.0f} MB), "
              f"{r['ms']:.0f} ms", flush=True)
        row = {"case": title, "peak_rss_mb": r["peak_mb"], "inherent_mb": r["inherent_mb"],
               "workspace_mb": r["workspace_mb"], "convtrain_ms": r["ms"]}
        ROWS.append(row)
        rows.append(row)
    return rows


def write_markdown(path: str, header: str, peak: float | None) -> None:
    lines = [header, "", "| case | convtrain (median, min-max) | torch (median, min-max) | "
             "convtrain/torch | GFLOP/s (% sgemm peak) |", "|---|---|---|---|---|"]
    for r in ROWS:
        if "convtrain_ips" in r:
            per_epoch = "/".join(f"{v:.0f}" for v in r["convtrain_rss_per_epoch"])
            ours = (f"{r['convtrain_ips']:.0f} img/s, process peak RSS {per_epoch} MB by epoch")
            theirs = (f"{r['torch_ips']:.0f} img/s, process peak RSS {r['torch_rss_mb']:.0f} MB"
                      if "torch_ips" in r else "-")
            ratio = f"{r['throughput_ratio']:.2f} (throughput)" if "torch_ips" in r else "-"
            lines.append(f"| {r['case']} | {ours} | {theirs} | {ratio} | |")
        elif "peak_rss_mb" in r:
            lines.append(f"| {r['case']} | peak +{r['peak_rss_mb']:.0f} MB RSS (workspace "
                         f"{r['workspace_mb']:.0f} MB; y + dx alone {r['inherent_mb']:.0f}"
                         f" MB), {r['convtrain_ms']:.0f} ms | | | |")
        else:
            ours = (f"{r['convtrain_ms']:.2f} ms ({r['convtrain_min_ms']:.2f}-"
                    f"{r['convtrain_max_ms']:.2f})")
            theirs = (f"{r['torch_ms']:.2f} ms ({r['torch_min_ms']:.2f}-{r['torch_max_ms']:.2f})"
                      if "torch_ms" in r else "-")
            ratio = f"{r['ratio']:.2f}" if "ratio" in r else "-"
            gf = (f"{r['gflops']:.1f} ({100 * r['peak_fraction']:.0f}%)" if "peak_fraction" in r
                  else (f"{r['gflops']:.1f}" if "gflops" in r else ""))
            lines.append(f"| {r['case']} | {ours} | {theirs} | {ratio} | {gf} |")
    if peak:
        lines.append("")
        lines.append(f"sgemm peak (NumPy 2048^3 float32 matmul): {peak:.1f} GFLOP/s")
    Path(path).write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="gemm,conv,pool,step,epoch,memory",
                        help="comma list of: gemm, conv, pool, step, epoch, memory")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--conv-cases", default="abcde", help="which conv cases, e.g. 'bd'")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per side for 'epoch'")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--memory-limits", default="none,256,64",
                        help="workspace limits (MiB, 'none') for the memory case")
    parser.add_argument("--markdown", help="also write the results table to this file")
    parser.add_argument("--no-keep-freed-memory", action="store_true",
                        help="leave glibc malloc's defaults (freed memory goes back to the OS)")
    parser.add_argument("--wait-idle", type=float, default=0.0, metavar="S",
                        help="before each case, wait up to S seconds for idle CPUs (for a "
                             "machine shared with other jobs)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global WAIT_IDLE_S
    WAIT_IDLE_S = args.wait_idle
    if args.memory_child:
        memory_child(args.memory_child)
        return
    parts = set(args.only.split(","))
    if not args.no_keep_freed_memory:
        # What the trainer does (engine.keep_freed_memory): freed arrays are reused instead of
        # coming back as fresh, page-faulting pages. Process-wide, so torch gets it too.
        keep_freed_memory()
    if torch is not None:
        torch.set_num_threads(args.threads)
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version')} {i['num_threads']} threads"
                         for i in threadpool_info() if i["user_api"] == "blas")
    except ImportError:
        pass
    header = (f"convtrain {convtrain.__version__} | numpy {np.__version__} ({blas or 'BLAS ?'})"
              f" | torch {torch.__version__ if torch else 'not installed'} "
              f"(threads {args.threads}) | python {platform.python_version()} | "
              f"{os.cpu_count()} cpus | {platform.processor() or platform.machine()}")
    print(header)
    busy = cpu_busy_percent()
    if busy > 10:
        print(f"WARNING: the CPUs were {busy:.0f}% busy before starting: other processes "
              f"distort these timings (OpenBLAS stalls badly on busy cores)", flush=True)
    peak = None
    if "gemm" in parts or "conv" in parts:
        peak = sgemm_peak(args.repeats)
        print(f"sgemm peak (NumPy 2048^3 float32): {peak:.1f} GFLOP/s", flush=True)
    if "conv" in parts:
        bench_conv(args.repeats, peak, args.conv_cases)
    if "pool" in parts:
        bench_pool(args.repeats)
    if "step" in parts:
        bench_step(args.repeats)
    if "epoch" in parts:
        bench_epoch(args.epochs)
    if "memory" in parts:
        bench_memory(args.memory_limits.split(","))
    if args.markdown:
        write_markdown(args.markdown, header, peak)


if __name__ == "__main__":
    main()
