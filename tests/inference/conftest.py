"""Trained runs for the tests of the after-training tasks (eval, predict, export, gradcheck).

Each fixture trains once per test session, through the real command line (``python -m
convtrain``, so the run directory holds what a user's does: ``.hydra/``, the log,
``metrics.json``, ``checkpoints/{best,last}``), and returns the run directory (a ``Path``):

``digits_run``
    ``small_cnn`` on the embedded digits, 2 epochs, ``seed=DIGITS_SEED`` (3, not the default):
    the fast suite's run.
``cifar_run``
    ``cifar_cnn`` on synthetic CIFAR-10 (``cifar_root``: 200 train / 100 test 32x32 RGB images
    written in the CIFAR-10 binary format, class-dependent colours so the model learns
    something), 1 epoch. Its config names ``data.root``, so tasks find the data without help.
``fmnist_run``
    ``lenet5`` on the real Fashion-MNIST from /usr/share/datasets/fashion-mnist (a stratified
    ``data.subset`` of 2000 training images; the test split is all 10,000), 1 epoch. Skipped
    with a reason when the directory is absent.

Mark tests using ``cifar_run`` or ``fmnist_run`` ``@pytest.mark.slow``.

The runs are SHARED by every test of the session: never change their files. A task writing
into ``RUN_DIR/<task>/`` is fine (that is what the tasks do); a test that needs a damaged or
changed run copies it first with :func:`copy_run`.

Test modules outside ``tests/inference/`` take the fixtures they use from here (see
tests/app/test_task_eval.py)::

    from tests.inference import conftest as trained_runs
    digits_run, cifar_run = trained_runs.digits_run, trained_runs.cifar_run

and share one training per session with tests/inference/ (the runs are cached in this module).
Helpers: :func:`run_convtrain` (the CLI in a subprocess), :func:`copy_run`,
:func:`write_synthetic_cifar`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: the digits run's seed: not the default 0, so a task that took the command's seed instead of
#: the run's (from its checkpoint) draws other splits and fails its test
DIGITS_SEED = 3

#: run directories trained in this session, by fixture name (shared across importers)
_RUNS: dict[str, Path] = {}

#: what every fixture run sets: no TensorBoard or PNG output (faster; the tasks do not read it)
_QUIET = ("logger.tensorboard=false", "logger.png=false", "trainer.progress=false")


def run_convtrain(cwd: Path, *args: str, check: bool = True,
                  timeout: float = 900) -> subprocess.CompletedProcess:
    """``python -m convtrain ARGS`` in ``cwd`` with the checkout's package first on the path."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"convtrain {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def _train(name: str, factory: pytest.TempPathFactory, *overrides: str) -> Path:
    if name not in _RUNS:
        base = factory.mktemp(name)
        run_dir = base / "run"
        run_convtrain(base, *overrides, *_QUIET, f"hydra.run.dir={run_dir}")
        _RUNS[name] = run_dir
    return _RUNS[name]


def copy_run(run_dir: Path, destination: Path) -> Path:
    """A private copy of a shared run (its ``eval/`` and other task folders left out)."""
    target = destination / run_dir.name
    shutil.copytree(run_dir, target,
                    ignore=lambda d, names: [n for n in names if Path(d) == run_dir
                                             and n in ("eval", "predict", "export", "gradcheck",
                                                     "inspect")])
    return target


def write_synthetic_cifar(root: Path, n_train: int = 200, n_test: int = 100,
                          seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` in the CIFAR-10
    binary format (3073-byte records: label byte, 1024 R, 1024 G, 1024 B bytes, rows first).

    Class ``k`` has its own mean colour plus noise, so a model can learn the classes. Labels
    cycle through 0..9, so every split has every class. Returns ``root``.
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 216, size=(10, 3))

    def records(n: int) -> tuple[np.ndarray, bytes]:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        pixels = colours[labels][:, :, None, None] + rng.normal(0, 30, size=(n, 3, 32, 32))
        pixels = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        rows = np.concatenate([labels.astype(np.uint8)[:, None], pixels.reshape(n, -1)], axis=1)
        return labels, rows.tobytes()

    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    per_batch = np.array_split(np.arange(n_train), 5)
    for i, part in enumerate(per_batch, start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(records(len(part))[1])
    (folder / "test_batch.bin").write_bytes(records(n_test)[1])
    return root


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``small_cnn`` trained on digits for 2 epochs, via the CLI (run directory)."""
    return _train("digits_run", tmp_path_factory, "model=small_cnn", "data=digits",
                  "trainer.max_epochs=2", f"seed={DIGITS_SEED}")


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``data.root`` holding synthetic CIFAR-10 (200 train / 100 test images)."""
    if "cifar_root" not in _RUNS:
        _RUNS["cifar_root"] = write_synthetic_cifar(tmp_path_factory.mktemp("cifar10"))
    return _RUNS["cifar_root"]


@pytest.fixture(scope="session")
def cifar_run(tmp_path_factory: pytest.TempPathFactory, cifar_root: Path) -> Path:
    """``cifar_cnn`` trained on the synthetic CIFAR-10 for 1 epoch, via the CLI."""
    return _train("cifar_run", tmp_path_factory, "model=cifar_cnn", "data=cifar10",
                  f"data.root={cifar_root}", "trainer.max_epochs=1", "trainer.batch_size=20",
                  "optimizer.lr=0.002")  # the default 0.05 diverges in 9 steps of batch norm


@pytest.fixture(scope="session")
def fmnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lenet5`` trained on 2000 real Fashion-MNIST images for 1 epoch, via the CLI."""
    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR} "
                    "(Debian's dataset-fashion-mnist package)")
    return _train("fmnist_run", tmp_path_factory, "model=lenet5", "data=fashion_mnist",
                  f"data.root={FASHION_MNIST_DIR}", "data.subset=2000",
                  "trainer.max_epochs=1")
