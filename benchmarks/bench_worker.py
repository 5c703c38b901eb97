"""One measured side of bench_speed.py, run in a process of its own.

    python benchmarks/bench_worker.py --side torch --cases gemm,conv-b-fwd+bwd,step,resnet20
    python benchmarks/bench_worker.py --side convtrain --tree /work/wt-base --epochs 2
    python benchmarks/bench_worker.py --side convtrain --tree . --memory-limit 64

The process imports NumPy and ONE measured library: torch, or convtrain from ``--tree`` (put
first on ``sys.path``; the package's location is checked). It warms up and times a block of
calls of each selected case, then prints one line ``BENCH_JSON {...}`` with every recorded
call's time and what the process ran on (library, BLAS kernel from threadpoolctl, the
OpenBLAS environment variables, threads). The driver does the statistics.

Inputs are the same arrays on both sides (NumPy generators with fixed seeds, copied into
torch), so the two libraries compute the same thing: the same weights too, for the LeNet-5 and
ResNet-20 training steps (keyed by convtrain's ``state_dict`` names, loaded into both models).
A case a tree cannot run (``resnet20`` needs ``convtrain.model_config``, commit 040e66c) is
reported under ``skipped`` with the reason, not timed. The convtrain side works with both package
layouts (``convtrain.engine`` before the house move of issue #10, ``convtrain.ops`` /
``convtrain.runtime`` / ``convtrain.nn`` after it), through its public names where they exist.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gzip
import importlib
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

import bench_cases as cases  # this script's directory is sys.path[0]

OPENBLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- timing
def time_block(fn: Callable[[], Any], block_s: float, min_calls: int = 3,
               warmup: int = 2) -> list[float]:
    """Seconds per call of ``fn``: ``warmup`` unrecorded calls, then calls until at least
    ``min_calls`` are recorded and ``block_s`` has passed.

    Time-based blocks: a call count derived from the warm-up's time (which includes first-call
    allocations) gave short blocks after a slow warm-up, and (b)'s medians swung 1.4-1.6x
    between runs of the same code."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < block_s:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


class PeakRSS:
    """Samples this process's resident set size every few ms; ``peak`` in bytes."""

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

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self.rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# ----------------------------------------------------------------------------- shared inputs
def he_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))


def conv_arrays(letter: str) -> dict[str, np.ndarray]:
    """x (N, C, H, W), weight (F, C, k, k), bias (F,), dy (N, F, oh, ow) of conv case ``letter``."""
    cin, cout, hw, k, s, p, n = cases.CONV_CASES[letter][1]
    out = cases.conv_output_size(hw, k, s, p)
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((n, cin, hw, hw), dtype=np.float32),
            "weight": he_normal(rng, (cout, cin, k, k)),
            "bias": rng.standard_normal(cout, dtype=np.float32) * np.float32(0.1),
            "dy": rng.standard_normal((n, cout, out, out), dtype=np.float32)}


def pool_arrays() -> tuple[np.ndarray, np.ndarray]:
    """x ``POOL_SHAPE`` and dy (N, C, H/2, W/2) for the 2x2 max-pool."""
    n, c, h, w = cases.POOL_SHAPE
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, c, h, w), dtype=np.float32),
            rng.standard_normal((n, c, h // 2, w // 2), dtype=np.float32))


def lenet5_weights() -> dict[str, np.ndarray]:
    """He-normal weights and zero biases for LeNet-5, keyed by convtrain's state_dict names."""
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in cases.LENET5_PARAMS.items():
        weights[f"{name}.weight"] = he_normal(rng, shape)
        weights[f"{name}.bias"] = np.zeros(shape[0], dtype=np.float32)
    return weights


def resnet20_weights() -> dict[str, np.ndarray]:
    """ResNet-20's state (names and shapes: ``bench_cases.resnet20_state_shapes``): He-normal
    conv and dense weights, zero dense bias; batch norm at its initial state (weight 1, bias 0,
    running mean 0, running variance 1), as both libraries initialise it."""
    rng = np.random.default_rng(0)
    weights = {}
    for name, shape in cases.resnet20_state_shapes().items():
        if len(shape) > 1:
            weights[name] = he_normal(rng, shape)
        elif name.endswith((".running_var", "bn1.weight", "bn2.weight", "proj_bn.weight")):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            weights[name] = np.zeros(shape, dtype=np.float32)
    return weights


class CaseSkipped(Exception):
    """This side cannot run the case (a tree from before the case's API); the reason."""


def step_batch() -> tuple[np.ndarray, np.ndarray]:
    """One random batch, (STEP_BATCH, 1, 28, 28) float32 images and int64 labels."""
    rng = np.random.default_rng(0)
    return (rng.standard_normal((cases.STEP_BATCH, 1, 28, 28), dtype=np.float32),
            rng.integers(0, 10, cases.STEP_BATCH).astype(np.int64))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format, gzipped) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def epoch_data(data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` images (n, 1, 28, 28) float32 and labels (n,) int64: the first of Fashion-MNIST's
    training images, in [0, 1] standardised by their mean and std (what convtrain's
    ``load_dataset`` gives), or random images where the files are not there."""
    images, labels = (data_dir / "train-images-idx3-ubyte.gz",
                      data_dir / "train-labels-idx1-ubyte.gz")
    if images.is_file() and labels.is_file():
        x = read_idx(images)[:n].astype(np.float32)[:, None] / np.float32(255)
        x = (x - x.mean()) / x.std()
        return x.astype(np.float32), read_idx(labels)[:n].astype(np.int64), \
            f"Fashion-MNIST train ({data_dir})"
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 1, 28, 28), dtype=np.float32),
            rng.integers(0, 10, n).astype(np.int64), "random 28x28 images")


def blas_description() -> str:
    """Every thread pool threadpoolctl sees: library, version, kernel (architecture), threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    # Sorted: threadpoolctl lists the pools in load order, which varies between processes.
    for pool in sorted(threadpool_info(), key=lambda p: (p["user_api"], p["filepath"])):
        text = f"{pool['internal_api']} {pool.get('version') or ''}".strip()
        if pool.get("architecture"):
            text += f" kernel {pool['architecture']}"
        text += f", {pool['num_threads']} threads"
        parts.append(f"{pool['user_api']}: {text} ({Path(pool['filepath']).name})")
    return "; ".join(parts) or "no BLAS/OpenMP pool found"


def glibc_keep_freed_memory() -> bool:
    """glibc malloc keeps freed memory for reuse (the settings of convtrain's
    ``keep_freed_memory``, which the trainer turns on). The torch side gets the same allocator
    so that page faults on fresh arrays do not decide the comparison; this copy exists because
    the torch process must not import convtrain."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 * 2**20) & mallopt(m_trim_threshold, 2**30))


# ----------------------------------------------------------------------------- torch side
class TorchSide:
    def __init__(self, threads: int, keep_freed: bool):
        import torch

        self.torch = torch
        torch.set_num_threads(threads)
        self.keep_freed = glibc_keep_freed_memory() if keep_freed else False
        self.threads = threads

    def info(self) -> dict[str, Any]:
        config = self.torch.__config__.show()
        picked = [line.strip(" -") for line in config.splitlines()
                  if line.strip(" -").startswith(("BLAS_INFO", "CPU capability usage"))]
        return {"library": f"torch {self.torch.__version__}",
                "threads": self.torch.get_num_threads(),
                "blas": f"torch: {', '.join(picked) or 'BLAS ?'}; threadpoolctl: "
                        f"{blas_description()}"}

    def sgemm(self) -> Callable[[], Any]:
        rng = np.random.default_rng(0)
        a, b = (self.torch.from_numpy(rng.standard_normal((cases.SGEMM_SIZE,) * 2,
                                                          dtype=np.float32)) for _ in range(2))
        return lambda: self.torch.mm(a, b)

    def conv(self, letter: str, direction: str) -> Callable[[], Any]:
        torch = self.torch
        cin, cout, hw, k, s, p, n = cases.CONV_CASES[letter][1]
        arrays = conv_arrays(letter)
        conv = torch.nn.Conv2d(cin, cout, k, stride=s, padding=p)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(arrays["weight"]))
            conv.bias.copy_(torch.from_numpy(arrays["bias"]))
        x = torch.from_numpy(arrays["x"]).requires_grad_(True)
        dy = torch.from_numpy(arrays["dy"])
        if direction == "fwd":
            def forward():
                with torch.no_grad():
                    conv(x)
            return forward

        def forward_backward():
            conv.zero_grad(set_to_none=True)
            x.grad = None
            conv(x).backward(dy)
        return forward_backward

    def pool(self) -> Callable[[], Any]:
        torch = self.torch
        x_np, dy_np = pool_arrays()
        x, dy = torch.from_numpy(x_np).requires_grad_(True), torch.from_numpy(dy_np)

        def forward_backward():
            x.grad = None
            torch.nn.functional.max_pool2d(x, 2, 2).backward(dy)
        return forward_backward

    def lenet5(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """A training step ``(x, y) -> loss`` of a torch LeNet-5 equal to convtrain's."""
        torch, nn = self.torch, self.torch.nn
        model = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
        names = ["conv1", None, None, "conv2", None, None, None, "fc1", None, "fc2", None, "fc3"]
        weights = lenet5_weights()
        with torch.no_grad():
            for module, name in zip(model, names):
                if name:
                    module.weight.copy_(torch.from_numpy(weights[f"{name}.weight"]))
                    module.bias.copy_(torch.from_numpy(weights[f"{name}.bias"]))
        return self.train_step(model)

    def resnet20_model(self) -> Any:
        """ResNet-20 (configs/model/resnet20.yaml) in torch.nn, holding
        :func:`resnet20_weights`: a 3x3 stem of 16 filters + BN + ReLU, 3 stages of 3 basic
        blocks (3x3 conv, BN, ReLU, 3x3 conv, BN, + shortcut, ReLU) of 16/32/64 filters, the
        first block of stages 2 and 3 at stride 2 with a 1x1 conv + BN shortcut, global average
        pooling, dense 10; no conv biases; BN momentum 0.1, eps 1e-5 (torch's defaults)."""
        torch, nn = self.torch, self.torch.nn

        class Block(nn.Module):
            def __init__(self, inputs: int, filters: int, stride: int):
                super().__init__()
                self.conv1 = nn.Conv2d(inputs, filters, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(filters)
                self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(filters)
                self.project = stride != 1 or inputs != filters
                if self.project:
                    self.proj = nn.Conv2d(inputs, filters, 1, stride, bias=False)
                    self.proj_bn = nn.BatchNorm2d(filters)

            def forward(self, x):
                y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
                return torch.relu(y + (self.proj_bn(self.proj(x)) if self.project else x))

        class ResNet20(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(1, cases.RESNET20_STEM, 3, 1, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(cases.RESNET20_STEM)
                inputs = cases.RESNET20_STEM
                for index, (filters, stride) in enumerate(cases.RESNET20_STAGES, 1):
                    blocks = []
                    for block in range(cases.RESNET20_BLOCKS):
                        blocks.append(Block(inputs, filters, stride if block == 0 else 1))
                        inputs = filters
                    setattr(self, f"stage{index}", nn.Sequential(*blocks))
                self.fc = nn.Linear(inputs, cases.RESNET20_CLASSES)

            def forward(self, x):
                x = torch.relu(self.bn1(self.conv1(x)))
                x = self.stage3(self.stage2(self.stage1(x)))
                return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

        model = ResNet20()
        state = model.state_dict()
        for name, value in resnet20_weights().items():
            # convtrain's stage2.block1.conv1.weight is torch's stage2.0.conv1.weight
            parts = name.split(".")
            if len(parts) > 2 and parts[1].startswith("block"):
                parts[1] = str(int(parts[1][len("block"):]) - 1)
            key = ".".join(parts)
            if key not in state or tuple(state[key].shape) != value.shape:
                raise SystemExit(f"bench_worker: the torch ResNet-20 has no {key} of shape "
                                 f"{value.shape} (convtrain's {name})")
            state[key] = torch.from_numpy(value)
        model.load_state_dict(state)
        return model.train()

    def resnet20(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """A training step ``(x, y) -> loss`` of the torch ResNet-20 (:meth:`resnet20_model`)."""
        return self.train_step(self.resnet20_model())

    def train_step(self, model: Any) -> Callable[[np.ndarray, np.ndarray], float]:
        """``(x, y) -> loss``: forward in train mode, mean cross-entropy, backward (the images
        need no gradient), SGD lr 0.01 momentum 0.9."""
        torch = self.torch
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step(x: np.ndarray, y: np.ndarray) -> float:
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)),
                                                     torch.from_numpy(y))
            loss.backward()
            optimizer.step()
            return loss.item()
        return step


# ----------------------------------------------------------------------------- convtrain side
def first_attribute(*candidates: str) -> Any:
    """The first of ``"module:attribute"`` candidates that exists: the same name lives in
    different modules before (``convtrain.engine``) and after (``convtrain.ops`` /
    ``convtrain.runtime``) the house move."""
    for candidate in candidates:
        module_name, attribute = candidate.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only "this layout has no such module" falls through; a module that exists but
            # fails to import is a real error.
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            continue
        if hasattr(module, attribute):
            return getattr(module, attribute)
    raise ImportError(f"none of {', '.join(candidates)} exists in this convtrain tree")


class ConvtrainSide:
    def __init__(self, tree: Path, threads: int, keep_freed: bool):
        # An editable install (pip install -e) adds a finder that serves convtrain's modules
        # from ITS tree whenever the tree on sys.path lacks them: measuring the old layout, it
        # found convtrain.ops in the new one. Only --tree may supply convtrain.
        sys.meta_path[:] = [finder for finder in sys.meta_path
                            if not getattr(finder, "__module__", "").startswith("__editable__")]
        sys.path.insert(0, str(tree))
        import convtrain

        self.convtrain, self.tree = convtrain, tree.resolve()
        self.check_origin()
        self.layout = ("convtrain.ops/runtime/nn" if importlib.util.find_spec("convtrain.ops")
                       else "convtrain.engine")
        self.Conv2d = first_attribute("convtrain.layers:Conv2d", "convtrain.nn:Conv2d")
        self.MaxPool2d = first_attribute("convtrain.layers:MaxPool2d", "convtrain.nn:MaxPool2d")
        self.build_model = convtrain.build_model
        self.build_optimizer = first_attribute("convtrain.optim:build_optimizer")
        self.softmax_cross_entropy = first_attribute(
            "convtrain.ops.losses:softmax_cross_entropy",
            "convtrain.engine.losses:softmax_cross_entropy")
        self.set_max_workspace_mb = first_attribute("convtrain.runtime:set_max_workspace_mb",
                                                    "convtrain.engine:set_max_workspace_mb")
        set_num_threads = first_attribute("convtrain.runtime:set_num_threads",
                                          "convtrain.engine:set_num_threads")
        self.get_num_threads = first_attribute("convtrain.runtime:get_num_threads",
                                               "convtrain.engine:get_num_threads")
        set_num_threads(threads)
        # What the trainer does by default (engine.keep_freed_memory: true).
        self.keep_freed = bool(first_attribute("convtrain.runtime:keep_freed_memory",
                                               "convtrain.engine:keep_freed_memory")()
                               if keep_freed else False)

    def check_origin(self) -> None:
        """Exit unless every imported convtrain module comes from ``--tree``."""
        for name, module in list(sys.modules.items()):
            origin = getattr(module, "__file__", None)
            if name.split(".")[0] == "convtrain" and origin and \
                    self.tree not in Path(origin).resolve().parents:
                raise SystemExit(f"bench_worker: {name} was imported from {origin}, not from "
                                 f"--tree {self.tree}")

    def info(self) -> dict[str, Any]:
        self.check_origin()  # the cases have imported what they use by now
        return {"library": f"convtrain {self.convtrain.__version__} from {self.tree} "
                           f"({self.layout} layout), numpy {np.__version__}",
                "threads": self.get_num_threads(), "blas": blas_description()}

    def sgemm(self) -> Callable[[], Any]:
        rng = np.random.default_rng(0)
        a, b = (rng.standard_normal((cases.SGEMM_SIZE,) * 2, dtype=np.float32)
                for _ in range(2))
        return lambda: a @ b

    def conv_layer(self, letter_or_shape: str | tuple[int, ...]) -> Any:
        shape = (cases.CONV_CASES[letter_or_shape][1] if isinstance(letter_or_shape, str)
                 else letter_or_shape)
        cin, cout, hw, k, s, p, n = shape
        return self.Conv2d(cin, cout, k, stride=s, padding=p, rng=np.random.default_rng(1))

    def conv(self, letter: str, direction: str) -> Callable[[], Any]:
        arrays = conv_arrays(letter)
        layer = self.conv_layer(letter)
        layer.params["weight"][...] = arrays["weight"]
        layer.params["bias"][...] = arrays["bias"]
        x, dy = arrays["x"], arrays["dy"]
        if direction == "fwd":
            return lambda: layer.forward(x)
        return lambda: (layer.forward(x), layer.backward(dy))

    def pool(self) -> Callable[[], Any]:
        x, dy = pool_arrays()
        pool = self.MaxPool2d(2, 2)
        return lambda: (pool.forward(x), pool.backward(dy))

    def lenet5(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """A training step ``(x, y) -> loss`` of configs/model/lenet5.yaml from ``--tree``."""
        import yaml  # OmegaConf's own YAML reader; the config has no interpolations

        config = yaml.safe_load((self.tree / "configs" / "model" / "lenet5.yaml").read_text())
        model = self.build_model(config, (1, 28, 28), seed=0)
        model.load_state_dict(lenet5_weights())
        return self.train_step(model)

    def resnet20_model(self) -> Any:
        """configs/model/resnet20.yaml from ``--tree``, composed as the CLI composes it
        (``convtrain.model_config``: the file takes its block from configs/blocks/ through Hydra
        defaults), holding :func:`resnet20_weights`.

        Raises:
            CaseSkipped: the tree has no ``convtrain.model_config`` (before commit 040e66c).
        """
        model_config = getattr(self.convtrain, "model_config", None)
        if model_config is None:
            raise CaseSkipped("this tree has no convtrain.model_config (commit 040e66c) to "
                              "compose configs/model/resnet20.yaml as the CLI does")
        from convtrain.errors import ConfigError  # every tree with model_config has it

        try:
            model = self.build_model(model_config("resnet20"), (1, 28, 28), seed=0)
            model.load_state_dict(resnet20_weights())  # strict: names and shapes must match
        except ConfigError as exc:
            raise SystemExit(f"bench_worker: {self.tree}/configs/model/resnet20.yaml is not "
                             f"the benchmark's ResNet-20 (bench_cases.resnet20_state_shapes):"
                             f" {exc}") from None
        return model

    def resnet20(self) -> Callable[[np.ndarray, np.ndarray], float]:
        """A training step ``(x, y) -> loss`` of :meth:`resnet20_model`."""
        return self.train_step(self.resnet20_model())

    def train_step(self, model: Any) -> Callable[[np.ndarray, np.ndarray], float]:
        """``(x, y) -> loss``: forward in training mode, mean cross-entropy, backward without
        the input gradient, SGD lr 0.01 momentum 0.9 (the torch side's step)."""
        optimizer = self.build_optimizer({"name": "sgd", "lr": 0.01, "momentum": 0.9}, model)
        loss_and_grad = self.softmax_cross_entropy

        def step(x: np.ndarray, y: np.ndarray) -> float:
            loss, dlogits = loss_and_grad(model.forward(x, training=True), y)
            # No gradient w.r.t. the images, exactly like torch (the input needs no grad).
            model.backward(dlogits, input_grad=False)
            optimizer.step()
            return float(loss)
        return step

    def memory(self, limit: str) -> dict[str, float]:
        """Forward+backward of ``MEMORY_CASE`` three times under a workspace limit of ``limit``
        MiB (``none``: unlimited): peak RSS above the inputs, the inherent output bytes, the
        layer's workspace and the median time."""
        self.set_max_workspace_mb(None if limit == "none" else float(limit))
        cin, cout, hw, k, s, p, n = cases.MEMORY_CASE
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, cin, hw, hw), dtype=np.float32)
        layer = self.conv_layer(cases.MEMORY_CASE)
        out = cases.conv_output_size(hw, k, s, p)
        dy = rng.standard_normal((n, cout, out, out), dtype=np.float32)
        times = []
        with PeakRSS(interval=0.002) as mem:
            for _ in range(3):
                t0 = time.perf_counter()
                y = layer.forward(x)  # kept alive, as a model keeps its activations
                dx = layer.backward(dy)
                times.append(time.perf_counter() - t0)
                del y, dx
        workspace = getattr(getattr(layer, "workspace", None), "nbytes", None)
        return {"limit": limit, "peak_mb": (mem.peak - mem.base) / 2**20,
                "inherent_mb": (dy.nbytes + x.nbytes) / 2**20,  # y and dx, beside x and dy
                "workspace_mb": None if workspace is None else workspace / 2**20,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "ms": 1e3 * statistics.median(times)}


# ----------------------------------------------------------------------------- runs
def case_call(side: TorchSide | ConvtrainSide, case_id: str) -> Callable[[], Any]:
    """One call of case ``case_id`` on ``side``, ready to time.

    Raises:
        CaseSkipped: the side cannot run the case.
    """
    if case_id == "gemm":
        return side.sgemm()
    if case_id.startswith("conv-"):
        _, letter, direction = case_id.split("-", 2)
        return side.conv(letter, direction)
    if case_id == "pool":
        return side.pool()
    if case_id in ("step", "resnet20"):
        step = side.lenet5() if case_id == "step" else side.resnet20()
        x, y = step_batch()
        return lambda: step(x, y)
    raise SystemExit(f"bench_worker: unknown case {case_id!r}")


def timed_cases(side: TorchSide | ConvtrainSide, case_ids: list[str],
                block_s: float) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Seconds per call of each case, and ``{case: reason}`` of the cases this side skips."""
    results, skipped = {}, {}
    for case_id in case_ids:
        try:
            fn = case_call(side, case_id)
        except CaseSkipped as exc:
            skipped[case_id] = str(exc)
            continue
        results[case_id] = time_block(fn, block_s)
    return results, skipped


def epochs(side: TorchSide | ConvtrainSide, count: int, images: int,
           data_dir: Path) -> dict[str, Any]:
    """``count`` epochs of LeNet-5 training on ``images`` images, batch ``STEP_BATCH``, shuffled:
    images/s and the process's absolute peak RSS of each (equal peaks across epochs mean no
    growth; deltas would read 0 once freed memory is kept for reuse)."""
    x, y, source = epoch_data(data_dir, images)
    step = side.lenet5()
    rng = np.random.default_rng(0)
    images_per_s, peak_rss_mb = [], []
    for _ in range(count):
        order = rng.permutation(len(x))
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            for i in range(0, len(x), cases.STEP_BATCH):
                batch = order[i:i + cases.STEP_BATCH]
                step(x[batch], y[batch])
            elapsed = time.perf_counter() - t0
        images_per_s.append(len(x) / elapsed)
        peak_rss_mb.append(mem.peak / 2**20)
    return {"source": source, "images_per_s": images_per_s, "peak_rss_mb": peak_rss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["torch", "convtrain"], required=True)
    parser.add_argument("--tree", type=Path, help="convtrain source tree (--side convtrain)")
    parser.add_argument("--cases", default="", help="comma list of timed case ids")
    parser.add_argument("--epochs", type=int, default=0, help="LeNet-5 epochs to run")
    parser.add_argument("--epoch-images", type=int, default=cases.EPOCH_IMAGES)
    parser.add_argument("--memory-limit", help="workspace limit (MiB or 'none') for layer (e)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block-seconds", type=float, default=0.25)
    parser.add_argument("--no-keep-freed-memory", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=FASHION_MNIST_DIR)
    args = parser.parse_args()

    keep_freed = not args.no_keep_freed_memory
    if args.side == "torch":
        side: TorchSide | ConvtrainSide = TorchSide(args.threads, keep_freed)
    else:
        if args.tree is None:
            parser.error("--side convtrain needs --tree")
        side = ConvtrainSide(args.tree, args.threads, keep_freed)
    result: dict[str, Any] = {}
    case_ids = [c for c in args.cases.split(",") if c]
    if case_ids:
        result["cases"], result["skipped"] = timed_cases(side, case_ids, args.block_seconds)
    if args.epochs:
        result["epoch"] = epochs(side, args.epochs, args.epoch_images, args.data_dir)
    if args.memory_limit:
        if not isinstance(side, ConvtrainSide):
            parser.error("--memory-limit measures convtrain's workspace: --side convtrain")
        result["memory"] = side.memory(args.memory_limit)
    result["info"] = {  # last: the convtrain side checks where every module it used came from
        **side.info(), "python": platform.python_version(), "pid": os.getpid(),
        "keep_freed_memory": side.keep_freed,
        "openblas_env": {name: os.environ.get(name) for name in OPENBLAS_ENV}}
    print(cases.JSON_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
