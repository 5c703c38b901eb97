"""Run directories are owned: one live run per directory, finished runs are not overwritten.

* **The lock**: ``<run dir>/.convtrain.lock`` is held with ``flock`` for the whole run and holds
  the owner's pid, host and start time. A second run into the same directory is refused with one
  line naming the directory and that process. The kernel drops the lock when its process ends,
  however it ends, so a lock left by a dead run (a stale lock) is simply taken over; a finished
  run removes the file.
* **Finished runs**: a new run into a directory that already holds an earlier run's results
  (``metrics.json`` or a checkpoint) is refused, unless it resumes from that directory
  (``trainer.resume=DIR``) or ``overwrite_run_dir=true`` is set.
* Both checks run in :class:`RunDirGuard`, a Hydra callback (``configs/hydra/default.yaml``)
  called before Hydra creates the job's log file and writes ``.hydra/``: a refused start leaves
  the earlier run's files as they were. Sweep jobs lock their own directory when they start
  (:func:`owned`), the sweep directory is guarded as a whole.
* Disk and permission trouble (read-only, no permission, disk full) is the user's environment,
  not a bug: :func:`describe_os_error` gives the one line, naming the path, what failed, and
  which completed epochs the run directory still keeps.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from convtrain.app.hydra_errors import print_error
from convtrain.errors import ConfigError

log = logging.getLogger("convtrain")

LOCK_FILE = ".convtrain.lock"
#: files that make a directory hold an earlier run's results
RESULT_FILES = ("metrics.json", "checkpoints/last.safetensors", "checkpoints/best.safetensors")
#: what Hydra rewrites in a run directory at every start, and the failure marker
_START_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "error.txt")
#: errors of the user's environment (disk, permissions), not of convtrain
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EFBIG, errno.EIO}
_WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


class RunDirError(ConfigError):
    """A run directory that cannot be used (in use, holds a finished run, not writable)."""


def _where(exc: OSError) -> str:
    return str(exc.filename) if exc.filename else ""


def os_error_line(exc: OSError, action: str = "write") -> str:
    """``cannot write /d/metrics.json: No space left on device``."""
    reason = exc.strerror or str(exc)
    path = _where(exc)
    if exc.errno in _WRITE_ONLY_ERRNOS or action != "write":
        return f"cannot {action} {path}: {reason}" if path else f"cannot {action}: {reason}"
    return f"{path}: {reason}" if path else reason


def kept_results(run_dir: Path) -> str:
    """What the run directory keeps of completed epochs, read from the files themselves."""
    kept = []
    epochs = _epochs_in(run_dir / "metrics.json", "epochs_completed")
    if epochs:
        kept.append(f"metrics.json of {_epochs(epochs)}")
    epoch = _epochs_in(run_dir / "checkpoints" / "last.json", "epoch")
    if epoch and (run_dir / "checkpoints" / "last.safetensors").is_file():
        kept.append(f"the checkpoint of epoch {epoch}")
    if not kept:
        return f"no completed epoch is saved in {run_dir}"
    message = f"{' and '.join(kept)} {'are' if len(kept) > 1 else 'is'} kept in {run_dir}"
    if epoch:
        message += f" (resume with trainer.resume={run_dir})"
    return message


def _epochs(n: int) -> str:
    return "epoch 1" if n == 1 else f"epochs 1-{n}"


def _epochs_in(path: Path, key: str) -> int | None:
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def describe_os_error(exc: BaseException, run_dir: Path | None) -> str | None:
    """One line for a disk or permission error (None for any other exception)."""
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    message = os_error_line(exc)
    if run_dir is not None:
        message += f"; {kept_results(run_dir)}"
    return message


# --- the lock ---

_held: dict[Path, "RunDirLock"] = {}


class RunDirLock:
    """An exclusive ``flock`` on ``<directory>/.convtrain.lock`` naming its owner."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).absolute()
        self.path = self.directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RunDirError(self._in_use()) from None
                except BaseException:
                    os.close(fd)
                    raise
                # the previous owner may have removed the file between our open and flock
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)
            self._fd = fd
            self._write_owner(fd)
        except OSError as exc:
            self.release()
            raise RunDirError(f"run directory {self.directory}: {os_error_line(exc)}") from None

    def _write_owner(self, fd: int) -> None:
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        data = (json.dumps(owner) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _in_use(self) -> str:
        try:
            owner = json.loads(self.path.read_text())
            who = (f"pid {owner['pid']} on {owner['host']}, started {owner['started']}")
        except (OSError, ValueError, KeyError, TypeError):
            who = "owner unknown"
        return (f"run directory {self.directory} is in use by another convtrain run ({who}); "
                f"wait for it to end or choose another hydra.run.dir")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: nobody can take an unlinked file
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


def hold(directory: Path) -> bool:
    """Lock ``directory`` for this process; False when this process holds it already."""
    directory = Path(directory).absolute()
    if directory in _held:
        return False
    lock = RunDirLock(directory)
    lock.acquire()
    if not _held:
        atexit.register(release_all)  # also after an exit Hydra's reporter takes
    _held[directory] = lock
    return True


def release(directory: Path) -> None:
    lock = _held.pop(Path(directory).absolute(), None)
    if lock is not None:
        lock.release()


def release_all() -> None:
    for directory in list(_held):
        release(directory)


@contextlib.contextmanager
def owned(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the block (taken here unless the guard took it already)."""
    hold(directory)
    try:
        yield
    finally:
        release(directory)


# --- finished runs ---

def results_in(directory: Path) -> list[str]:
    """The result files an earlier run left in ``directory`` (empty: a fresh directory)."""
    return [name for name in RESULT_FILES if (directory / name).is_file()]


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
    except (ValueError, OSError):
        return False
    return True


def _resumes(resume: Any, directory: Path) -> bool:
    return resume is not None and _inside(Path(str(resume)), directory)


def check_reuse(directory: Path, *, resume: Any, overwrite: bool) -> None:
    """Refuse a new run into a directory holding an earlier run's results."""
    found = results_in(directory)
    if not found or overwrite:
        return
    if _resumes(resume, directory):
        return
    raise RunDirError(
        f"run directory {directory} already holds a run ({', '.join(found)}); continue it with "
        f"trainer.resume={directory}, replace it with overwrite_run_dir=true, or choose "
        f"another hydra.run.dir")


#: what a run writes besides its log: removed when ``overwrite_run_dir=true`` replaces a run
_RUN_OUTPUTS = ("metrics.json", "error.txt", "checkpoints", "tensorboard", "images")


def clear_results(directory: Path) -> None:
    """Remove an earlier run's outputs (its event files must not mix with the new run's)."""
    for name in _RUN_OUTPUTS:
        path = directory / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            raise RunDirError(f"overwrite_run_dir: {os_error_line(exc, 'remove')}") from None


def replace_job_results(job_dir: Path, config: DictConfig) -> None:
    """A sweep job with ``overwrite_run_dir=true``: the earlier job's outputs go first."""
    resume = config.trainer.get("resume") if "trainer" in config else None
    if config.get("overwrite_run_dir", False) and results_in(job_dir) \
            and not _resumes(resume, job_dir):
        clear_results(job_dir)


class StartFiles:
    """The files Hydra rewrites at a start (``.hydra/``, ``error.txt``) of a directory with
    results, kept so that a resume refused before it saved anything can put them back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.saved = {name: _read(directory / name) for name in _START_FILES}
        self.results = {name: _read(directory / name)
                        for name in ("metrics.json", "checkpoints/last.json")}

    def restore_if_unchanged_results(self) -> None:
        """Put the start files back when the run added no result (it was refused)."""
        if any(_read(self.directory / name) != data for name, data in self.results.items()):
            return
        for name, data in self.saved.items():
            path = self.directory / name
            with contextlib.suppress(OSError):
                if data is None:
                    path.unlink(missing_ok=True)
                elif _read(path) != data:
                    path.write_bytes(data)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


_start_files: dict[Path, StartFiles] = {}


def restore_start_files(directory: Path) -> None:
    """After a refused resume: the directory's ``.hydra/`` and ``error.txt`` as before."""
    saved = _start_files.pop(Path(directory).absolute(), None)
    if saved is not None:
        saved.restore_if_unchanged_results()


def _refuse(exc: RunDirError) -> None:
    release_all()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    print_error(str(exc))
    sys.exit(2)


class RunDirGuard(Callback):
    """Locks and checks the run directory before Hydra writes anything into it.

    Hydra ignores exceptions raised by callbacks (it turns them into warnings), so a refusal
    ends the process here: one line, exit status 2.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # resolve hydra.run.dir as run_job will (same config object: `now` is cached)
        HydraConfig.instance().set_config(config)
        directory = Path(str(config.hydra.run.dir)).absolute()
        try:
            hold(directory)
            resume = config.trainer.get("resume") if "trainer" in config else None
            overwrite = bool(config.get("overwrite_run_dir", False))
            check_reuse(directory, resume=resume, overwrite=overwrite)
            if overwrite and results_in(directory) and not _resumes(resume, directory):
                clear_results(directory)
        except RunDirError as exc:
            _refuse(exc)
        if results_in(directory):  # resuming it
            _start_files[directory] = StartFiles(directory)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        directory = Path(str(config.hydra.sweep.dir)).absolute()
        try:
            hold(directory)
            if not config.get("overwrite_run_dir", False):
                found = sorted({str(p.relative_to(directory)) for name in RESULT_FILES
                                for p in directory.glob(f"**/{name}")})
                if found:
                    raise RunDirError(
                        f"sweep directory {directory} already holds runs ({', '.join(found[:3])}"
                        f"{', ...' if len(found) > 3 else ''}); replace them with "
                        f"overwrite_run_dir=true or choose another hydra.sweep.dir")
        except RunDirError as exc:
            _refuse(exc)
