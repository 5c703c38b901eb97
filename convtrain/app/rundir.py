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
  the earlier run's files as they were. The sweep directory is guarded and locked as a whole
  for the sweep; a run inside a locked directory, or a sweep over a live run, is refused
  (:func:`check_not_inside_live_run`, :func:`live_runs_below`). Sweep jobs lock their own
  directory too when they start (their ``.hydra/`` is written before any callback can check).
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
from omegaconf import DictConfig, OmegaConf, open_dict

from convtrain.app.hydra_errors import print_error
from convtrain.errors import ConfigError
from convtrain.training.atomic import atomic_write_bytes, os_error_line

log = logging.getLogger("convtrain")

LOCK_FILE = ".convtrain.lock"
#: files that make a directory hold an earlier run's results
RESULT_FILES = ("metrics.json", "checkpoints/last.safetensors", "checkpoints/best.safetensors")
#: what Hydra rewrites in a run directory at every start, and the failure marker
_START_FILES = (".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "error.txt")
#: errors of the user's environment (disk, permissions), not of convtrain
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.EFBIG, errno.EIO}


class RunDirError(ConfigError):
    """A run directory that cannot be used (in use, holds a finished run, not writable)."""


def kept_results(run_dir: Path) -> str:
    """What the run directory keeps of completed epochs, read from the files themselves."""
    kept = []
    epochs = _epochs_in(run_dir / "metrics.json", "epochs_completed")
    if epochs:
        kept.append(f"metrics.json of {_epochs(epochs)}")
    epoch = _epochs_in(run_dir / "checkpoints" / "last.json", "epoch")
    has_last = (run_dir / "checkpoints" / "last.safetensors").is_file()
    if epoch and has_last:
        kept.append(f"the checkpoint of epoch {epoch}")
    resume = f"resume with trainer.resume={run_dir}"
    if not kept:
        message = f"no completed epoch is saved in {run_dir}"
        # an interrupt in the first epoch saves the start (epoch 0): it still resumes
        return f"{message} ({resume} to start over from its checkpoint)" if has_last else message
    message = f"{' and '.join(kept)} {'are' if len(kept) > 1 else 'is'} kept in {run_dir}"
    if has_last:
        message += f" ({resume})"
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

    def owner(self) -> str:
        """``pid 4242 on vm, started 2026-...`` from the lock file."""
        try:
            owner = json.loads(self.path.read_text())
            return f"pid {owner['pid']} on {owner['host']}, started {owner['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "owner unknown"

    def _in_use(self) -> str:
        return (f"run directory {self.directory} is in use by another convtrain run "
                f"({self.owner()}); wait for it to end or choose another hydra.run.dir")

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # while still locked: nobody can take an unlinked file
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


def held_elsewhere(directory: Path) -> bool:
    """True when ``directory``'s lock is held by another process (a live run or sweep).

    A shared ``flock`` probe: it conflicts with the owner's exclusive lock and is dropped at
    once. A lock this process holds is not "elsewhere"."""
    directory = Path(directory).absolute()
    if directory in _held:
        return False
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False  # no lock file (or an unreadable one: the owner's own check refuses)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the probe's lock
    return False


def check_not_inside_live_run(directory: Path) -> None:
    """Refuse a run whose directory lies inside a live run's or sweep's directory (a sweep's
    jobs write ``.hydra/`` and their log before any job can check its own lock)."""
    directory = Path(directory).absolute()
    for parent in directory.parents:
        if held_elsewhere(parent):
            raise RunDirError(
                f"run directory {directory} lies inside {parent}, which is in use by another "
                f"convtrain run ({RunDirLock(parent).owner()}); wait for it to end or choose "
                f"another directory")


def live_runs_below(directory: Path) -> list[Path]:
    """Directories below ``directory`` whose lock another process holds."""
    directory = Path(directory).absolute()
    return sorted(lock.parent for lock in directory.rglob(LOCK_FILE)
                  if lock.parent != directory and held_elsewhere(lock.parent))


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
    go_on = (f"continue it with trainer.resume={directory}, "
             if (directory / "checkpoints" / "last.safetensors").is_file() else "")
    raise RunDirError(
        f"run directory {directory} already holds a run ({', '.join(found)}); {go_on}replace it "
        f"with overwrite_run_dir=true, or choose another hydra.run.dir")


#: what a run writes besides its log: removed when ``overwrite_run_dir=true`` replaces a run
#: (initial_kernels.npz: convtrain/visuals/initial_kernels.py, the kernel views' reference)
_RUN_OUTPUTS = ("metrics.json", "error.txt", "checkpoints", "tensorboard", "images",
                "initial_kernels.npz")


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


def training_started(directory: Path) -> None:
    """The resume was accepted and training began: a failure from now on is the run's own
    (its ``error.txt`` and ``.hydra/`` stay as this run wrote them)."""
    _start_files.pop(Path(directory).absolute(), None)


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
                    atomic_write_bytes(path, data)  # the old file whole, or the new one


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


_start_files: dict[Path, StartFiles] = {}


def restore_start_files(directory: Path) -> None:
    """After a resume refused before training started (:func:`training_started` not
    called): the directory's ``.hydra/`` and ``error.txt`` as before."""
    saved = _start_files.pop(Path(directory).absolute(), None)
    if saved is not None:
        saved.restore_if_unchanged_results()


def _refuse(exc: RunDirError | ConfigError) -> None:
    release_all()
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise exc
    print_error(str(exc))
    sys.exit(2)


def _sweep_go_on(directory: Path) -> str:
    """How to go on with a sweep directory holding runs (an interrupted sweep, say): its
    jobs resume one by one in place; a sweep cannot be continued as a whole."""
    resumable = sorted((p.parent.parent for p in directory.glob("**/checkpoints/last.safetensors")),
                       key=lambda job: [(0, int(x), "") if x.isdigit() else (1, 0, x)
                                        for x in job.relative_to(directory).parts])
    replace = "replace them with overwrite_run_dir=true, or choose another hydra.sweep.dir"
    if not resumable:
        return replace
    job = resumable[0]
    return (f"continue a job in place with its overrides plus trainer.resume={job} "
            f"hydra.run.dir={job} (an interrupted job's error.txt holds the whole command), run "
            f"the jobs still to do with another hydra.sweep.dir, or {replace.split(', or ')[0]}")


def _works_on_trained_run(config: DictConfig) -> bool:
    """True for a task such as eval that reads a trained run (convtrain.app.tasks)."""
    from convtrain.app.tasks import works_on_trained_run  # noqa: PLC0415

    return works_on_trained_run(config.get("task"))


# --- the jobs' directories of a sweep ---

#: ``hydra.sweep.subdir`` values that give every job its own directory by construction
_DISTINCT_SUBDIRS = ("${hydra.job.num}", "${hydra.job.id}")
_BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def check_job_dirs(config: DictConfig, sweep_dir: Path) -> None:
    """Refuse a sweep whose ``hydra.sweep.subdir`` puts a job outside the sweep directory
    (``../x``, an absolute path) or two jobs into one directory (``same``), before any job
    runs: such a job would write into another run's directory, or over the job before it.

    The jobs are those the basic sweeper will launch (its grid of the command line's and
    ``hydra.sweeper.params``' values), each composed as its launcher does; a sweeper that
    picks its jobs as it goes (Optuna) cannot be checked ahead, except for a ``subdir``
    that is the same for every job. The default ``${hydra.job.num}`` needs no check.
    """
    raw = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
    if raw in _DISTINCT_SUBDIRS:
        return
    jobs = _basic_sweep_jobs(config)
    if jobs is None:  # another sweeper: only what holds for any job can be checked
        jobs = [[], []] if "${" not in str(raw) else []
    seen: dict[Path, tuple[int, list[str]]] = {}
    for num, overrides in enumerate(jobs):
        job_dir = _job_dir(config, sweep_dir, num, overrides)
        if job_dir is None:
            return  # a job that does not compose: the sweeper reports it
        what = f"job {num}" + (f" ({' '.join(overrides)})" if overrides else "")
        if job_dir == sweep_dir or sweep_dir not in job_dir.parents:
            raise RunDirError(
                f"hydra.sweep.subdir: {what} would run in {job_dir}, "
                f"{'which is' if job_dir == sweep_dir else 'outside'} the sweep directory "
                f"{sweep_dir}; keep every job's directory inside "
                f"hydra.sweep.dir (the default hydra.sweep.subdir=${{hydra.job.num}} does)")
        if job_dir in seen:
            other, other_overrides = seen[job_dir]
            other_what = f"job {other}" + (f" ({' '.join(other_overrides)})"
                                           if other_overrides else "")
            raise RunDirError(
                f"hydra.sweep.subdir: {other_what} and {what} would both run in {job_dir}; "
                f"give each job its own directory (e.g. hydra.sweep.subdir=${{hydra.job.num}} "
                f"or ${{hydra.job.override_dirname}})")
        seen[job_dir] = (num, overrides)


def _basic_sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides as the basic sweeper will launch them; None for another sweeper
    (or when the overrides do not parse: the sweeper reports that)."""
    if config.hydra.sweeper.get("_target_") != _BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper  # noqa: PLC0415
    from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: PLC0415

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    try:
        parsed = OverridesParser.create().parse_overrides(arguments)
        [batch] = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # noqa: BLE001 - the sweeper reports its own errors
        return None
    return [list(job) for job in batch]


def _job_dir(config: DictConfig, sweep_dir: Path, num: int,
             overrides: list[str]) -> Path | None:
    """The directory the launcher gives job ``num`` (``hydra.sweep.subdir`` resolved in the
    job's own config, composed as the launchers compose it), normalised; None when the job's
    config does not compose."""
    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415

    try:
        job_config = GlobalHydra.instance().hydra.config_loader.load_sweep_config(
            config, list(overrides))
        with open_dict(job_config):
            job_config.hydra.job.id = num
            job_config.hydra.job.num = num
        subdir = str(OmegaConf.select(job_config, "hydra.sweep.subdir"))
    except Exception:  # noqa: BLE001 - the sweeper reports a job that does not compose
        return None
    return Path(os.path.normpath(sweep_dir / subdir))


class RunDirGuard(Callback):
    """Locks and checks the run directory before Hydra writes anything into it.

    Hydra ignores exceptions raised by callbacks (it turns them into warnings), so a refusal
    ends the process here: one line, exit status 2.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # resolve hydra.run.dir as run_job will (same config object: `now` is cached)
        HydraConfig.instance().set_config(config)
        directory = Path(str(config.hydra.run.dir)).absolute()
        if _works_on_trained_run(config):
            # eval/predict/export write only their own RUN_DIR/<task>/ (replaced each time) and
            # read the run's atomically written checkpoints, so a live run may be read
            from convtrain.app.tasks._trained import checkpoint_file  # noqa: PLC0415
            try:
                checkpoint_file(config)  # a mistyped run: refused before RUN_DIR/<task>/ is made
                hold(directory)
            except (RunDirError, ConfigError) as exc:
                _refuse(exc)
            return
        try:
            hold(directory)  # before looking at the parents: two racing starts cannot both pass
            check_not_inside_live_run(directory)
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
            check_job_dirs(config, directory)
            hold(directory)
            check_not_inside_live_run(directory)
            live = live_runs_below(directory)
            if live:
                raise RunDirError(
                    f"sweep directory {directory} holds a live run in {live[0]} "
                    f"({RunDirLock(live[0]).owner()}); wait for it to end or choose another "
                    f"hydra.sweep.dir")
            if not config.get("overwrite_run_dir", False):
                found = sorted({str(p.relative_to(directory)) for name in RESULT_FILES
                                for p in directory.glob(f"**/{name}")})
                if found:
                    raise RunDirError(
                        f"sweep directory {directory} already holds runs ({', '.join(found[:3])}"
                        f"{', ...' if len(found) > 3 else ''}); {_sweep_go_on(directory)}")
        except RunDirError as exc:
            _refuse(exc)
