"""Failed jobs in a ``-m`` sweep: recorded by the job, summarised by the main process.

A job that fails inside a sweep must not stop the others (a sweeper would abort the sweep as
soon as it sees a raised exception), so :func:`record_failure` writes the error to the job's own
log and to ``<job dir>/error.txt``, and the job returns None (Optuna marks the trial failed).
Launchers may run jobs in other processes or on other machines (joblib, submitit), so the
main process learns about failures from those files: :class:`SweepMonitor`, a Hydra callback
configured in ``configs/hydra/default.yaml``, notes where and when the sweep started, and
:func:`failed_jobs` lists the ``error.txt`` files written since then.

It also stops a sweep cleanly on SIGINT / SIGTERM when its jobs run in other processes on this
machine (joblib, submitit_local): see "stopping a sweep" below.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("convtrain")

ERROR_FILE = "error.txt"

# The current sweep of this process: (sweep dir, start time), set by SweepMonitor.
_sweep: tuple[Path, float] | None = None


_JOBLIB_LAUNCHER = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
_SUBMITIT_LOCAL_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
#: launchers whose jobs run in other processes of this machine, in the sweep's process group
_LOCAL_WORKER_LAUNCHERS = (_JOBLIB_LAUNCHER, _SUBMITIT_LOCAL_LAUNCHER)
_SUBMITIT_SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
_BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
# A sweep submitted to SLURM: the submitit folder, where each job's files are named by its id
_cluster_folder: Path | None = None
# The launcher of this process's sweep (its `_target_`)
_launcher: str | None = None
#: in the sweep directory: the sweep was interrupted, jobs not yet started are skipped
INTERRUPTED_FILE = ".convtrain.interrupted"


class SweepMonitor(Callback):
    """Remembers the sweep directory so that the CLI can list failed jobs at the end, and
    stops a joblib or submitit_local sweep (jobs in other processes) cleanly on SIGINT /
    SIGTERM."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep
        # one second of slack: file mtimes may be coarser than time.time()
        _sweep = (Path(str(config.hydra.sweep.dir)).absolute(), time.time() - 1.0)
        with contextlib.suppress(OSError):  # left by a sweep stopped at once
            (_sweep[0] / INTERRUPTED_FILE).unlink(missing_ok=True)
        global _cluster_folder, _launcher
        _launcher = launcher = config.hydra.launcher.get("_target_")
        _cluster_folder = None
        if launcher == _SUBMITIT_SLURM_LAUNCHER:
            folder = Path(str(config.hydra.launcher.submitit_folder)).absolute()
            # the part before the first `%j` (the job id submitit puts in its place)
            parts = folder.parts
            depth = next((i for i, part in enumerate(parts) if "%" in part), len(parts))
            _cluster_folder = Path(*parts[:depth])
        if launcher in _LOCAL_WORKER_LAUNCHERS:
            _catch_stop_signals()
        if launcher == _SUBMITIT_LOCAL_LAUNCHER:
            _start_submitit_controllers_deaf()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _restore_signal_handlers()
        _restore_submitit_controllers()


# --- stopping a sweep whose jobs run in other processes (joblib, submitit_local) ---
#
# Ctrl-C in a terminal signals the whole process group: the launcher's worker processes get
# the signal themselves, and their trainer stops each running job cleanly (its `last`
# checkpoint written, its error.txt holding the command that resumes it). The main process
# must not stop at once: a launcher interrupted in its wait (joblib) kills its workers, which
# may be writing that checkpoint. So the main process only notes the signal (and marks the
# sweep directory so that no further job starts), waits for the running jobs to end, and
# then prints one line and exits 130 / 143. A second signal stops it at once.
#
# submitit_local runs each job as a controller process (`python -m submitit.local._local`)
# that starts the job's process and waits for it. That controller has its own signal policy,
# which would defeat the job's clean stop: on SIGINT it dies with a KeyboardInterrupt
# traceback and ends its job (SIGINT again, which the job takes for a second Ctrl-C, then
# SIGKILL a second later); on SIGTERM it relays the signal, so a job that got it from the
# process group too gets it twice. submitit has no setting for this, so while the sweep runs,
# the main process starts each controller with SIGINT and SIGTERM blocked (a blocked signal
# stays blocked across fork and exec): the controller never acts on them, and the job's
# process, which inherits the mask, unblocks them as it starts (take_back_stop_signals),
# so it gets each signal once, from the process group, as a joblib worker does.

_stop_signal: int | None = None
_saved_handlers: dict[int, Any] = {}


def _catch_stop_signals() -> None:
    global _stop_signal
    _stop_signal = None
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)
        if previous is signal.SIG_IGN:
            continue  # an ignored signal stays ignored (nohup, a background job)
        _saved_handlers[signum] = previous
        signal.signal(signum, _on_stop_signal)


def _restore_signal_handlers() -> None:
    while _saved_handlers:
        signum, handler = _saved_handlers.popitem()
        signal.signal(signum, handler)


def _on_stop_signal(signum: int, frame: Any) -> None:
    global _stop_signal
    if _stop_signal is not None:  # the second signal: stop at once
        _restore_signal_handlers()
        raise KeyboardInterrupt if signum == signal.SIGINT else SweepStopped(signum)
    _stop_signal = signum
    if _sweep is not None:
        try:
            (_sweep[0] / INTERRUPTED_FILE).write_text(f"{signal.Signals(signum).name}\n")
        except OSError:
            pass  # the jobs already running stop anyway; a new one would run to its end


#: set for a submitit controller started with the stop signals blocked: the signals (names,
#: comma-separated) that the job's process unblocks again
UNBLOCK_ENV = "CONVTRAIN_UNBLOCK_SIGNALS"
_original_start_controller: Any = None


def _start_submitit_controllers_deaf() -> None:
    """Make submitit's local executor start its controllers with the stop signals blocked."""
    global _original_start_controller
    try:
        from submitit.local import local  # noqa: PLC0415 - only for submitit_local sweeps
    except ImportError:
        return
    if _original_start_controller is not None or not hasattr(local, "start_controller"):
        return  # already done, or a submitit without this function: its own policy applies
    _original_start_controller = original = local.start_controller

    def start_controller(*args: Any, **kwargs: Any) -> Any:
        stop = {signal.SIGINT, signal.SIGTERM}
        # blocked, a signal that arrives meanwhile waits and reaches this process after
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        blocked_here = sorted(stop - set(previous))  # one already blocked stays the user's
        saved_env = os.environ.get(UNBLOCK_ENV)
        os.environ[UNBLOCK_ENV] = ",".join(signal.Signals(s).name for s in blocked_here)
        try:
            return original(*args, **kwargs)  # copies os.environ for the controller
        finally:
            if saved_env is None:
                os.environ.pop(UNBLOCK_ENV, None)
            else:
                os.environ[UNBLOCK_ENV] = saved_env
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    local.start_controller = start_controller


def _restore_submitit_controllers() -> None:
    global _original_start_controller
    if _original_start_controller is not None:
        from submitit.local import local  # noqa: PLC0415

        local.start_controller, _original_start_controller = _original_start_controller, None


def take_back_stop_signals() -> None:
    """In a submitit_local job's process: unblock the stop signals its controller was started
    with blocked. A signal that arrived meanwhile is handled now (Python runs its handler
    before this returns)."""
    names = os.environ.pop(UNBLOCK_ENV, "")
    signums = {signal.Signals[name] for name in names.split(",") if name in
               signal.Signals.__members__}
    if signums:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signums)


class SweepStopped(BaseException):
    """A second SIGTERM to the main process of a sweep: stop at once."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def stop_signal() -> int | None:
    """The signal that interrupted this process's sweep, None when none did."""
    return _stop_signal


def skipped_as_interrupted(sweep_dir: Path) -> bool:
    """True when the sweep was interrupted before this job started (the job must not run)."""
    return (Path(sweep_dir) / INTERRUPTED_FILE).is_file()


def current_sweep() -> Path | None:
    """The directory of the sweep this process runs (its main process), None elsewhere."""
    return _sweep[0] if _sweep is not None else None


def exit_if_interrupted() -> None:
    """After the launcher returned (or failed): a sweep stopped by a signal ends here with its
    one line and exit status 128 + signal."""
    signum = _stop_signal
    if signum is not None and _sweep is not None:
        _restore_signal_handlers()
        print(interrupted_line(signum), file=sys.stderr)
        sys.exit(128 + signum)


def interrupted_line(signum: int) -> str:
    """The one line of a sweep stopped by ``signum``: which jobs stopped (each one's
    ``error.txt`` holds its resume command), which ended, that no further job ran."""
    assert _sweep is not None
    root = _sweep[0]
    with contextlib.suppress(OSError):
        (root / INTERRUPTED_FILE).unlink(missing_ok=True)
    stopped: list[str] = []
    early: list[str] = []
    failed: list[str] = []
    for job_dir, message in failed_jobs():
        kind = failed if not message.startswith("interrupted") else \
            stopped if "resume with `" in message else early
        kind.append(_relative(root, job_dir))
    line = f"convtrain: interrupted ({signal.Signals(signum).name}): the sweep in {root} stopped"
    if stopped:
        line += (f"; {_jobs(stopped)} stopped cleanly (each resumes in place with the command "
                 f"in its {ERROR_FILE})")
    if early:
        line += f"; {_jobs(early)} stopped before training began (run again)"
    if failed:
        line += f"; {_jobs(failed)} failed"
    return line + "; no further job was started"


def waiting_line(signum: int) -> str | None:
    """The one line of a sweep whose main process was interrupted while it waited for jobs
    that a launcher runs elsewhere and convtrain does not stop (SLURM, Ray, any other); None
    for the basic launcher (the jobs run in this process) and for joblib and submitit_local
    (the first signal is noted, and the jobs stop cleanly)."""
    if _sweep is None or _launcher in (None, _BASIC_LAUNCHER, *_LOCAL_WORKER_LAUNCHERS):
        return None
    if _cluster_folder is not None:
        return _slurm_line(signum)
    launcher = str(_launcher).rsplit(".", 1)[-1]
    return (f"convtrain: interrupted ({signal.Signals(signum).name}): stopped waiting for the "
            f"sweep in {_sweep[0]}; its jobs run under {launcher}, which convtrain does not "
            f"stop cleanly (they may go on, or end without a resume command); each job's "
            f"checkpoints are whole, holding its last completed epoch: resume a job with its "
            f"overrides and trainer.resume=DIR hydra.run.dir=DIR")


def _slurm_line(signum: int) -> str:
    """Its jobs are not this process's children and keep running (submitit does not cancel
    them): the line gives the ``scancel`` command that stops them."""
    assert _sweep is not None and _cluster_folder is not None
    ids = set()
    with contextlib.suppress(OSError):
        for path in _cluster_folder.rglob("*_submitted.pkl"):
            # `4242_submitted.pkl`, or `4242_3_submitted.pkl` for the 4th job of array 4242
            job_id = path.name[:-len("_submitted.pkl")].split("_")[0]
            if job_id.isdigit() and path.stat().st_mtime >= _sweep[1]:
                ids.add(job_id)
    line = (f"convtrain: interrupted ({signal.Signals(signum).name}): stopped waiting for the "
            f"sweep in {_sweep[0]}")
    if not ids:
        return line + f"; no submitted job was found in {_cluster_folder}"
    return (line + f"; its jobs keep running on the cluster: `scancel "
            f"{' '.join(sorted(ids, key=int))}` stops them, each job then stopping on SLURM's "
            f"SIGTERM as on Ctrl-C (its {ERROR_FILE} holds its resume command)")


def _jobs(names: list[str]) -> str:
    return f"job{'s' if len(names) > 1 else ''} {', '.join(names)}"


# Jobs of this process refused because their directory belongs to another live run: they
# must not write error.txt there, so the main process learns of them here (in-process
# launchers) or from a file in the sweep directory (a job in a launcher's worker process).
_refused: list[tuple[Path, str]] = []
REFUSED_PREFIX = ".convtrain.refused."


def record_refused(job_dir: Path, message: str, sweep_dir: Path | None = None) -> None:
    """A job that could not run because its directory is another run's: a failure of the
    sweep, recorded without writing into that directory. ``sweep_dir``: in a worker process,
    where the record goes for the sweep's main process to find."""
    job_dir = Path(job_dir).absolute()
    _refused.append((job_dir, message))
    if _sweep is None and sweep_dir is not None:
        record = Path(sweep_dir) / f"{REFUSED_PREFIX}{os.getpid()}.{len(_refused)}"
        try:
            record.write_text(json.dumps({"job_dir": str(job_dir), "error": message}) + "\n")
        except OSError as exc:
            log.warning("cannot write %s: %s", record, exc.strerror or exc)


def _refused_in_workers(root: Path, started: float) -> list[tuple[Path, str]]:
    found = []
    for path in root.glob(f"{REFUSED_PREFIX}*"):
        try:
            if path.stat().st_mtime < started:
                continue
            record = json.loads(path.read_text())
            found.append((Path(record["job_dir"]), str(record["error"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


def clear_failure(job_dir: Path) -> None:
    """Remove a stale ``error.txt`` (a re-used job directory must not look failed)."""
    try:
        (job_dir / ERROR_FILE).unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove %s: %s", job_dir / ERROR_FILE, exc.strerror or exc)


def record_failure(job_dir: Path, exc: BaseException, message: str | None) -> None:
    """Log the failure (to the job's log file and the console) and write ``error.txt``.

    ``message`` is the one-line description of a config mistake, which needs no traceback;
    None means an unexpected error, logged with its traceback.
    """
    if message is None:
        message = f"{type(exc).__name__}: {exc}"
        log.error("job failed: %s\n%s", message,
                  "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
    else:
        log.error("job failed: %s", message)
    write_error(job_dir, message)


def write_error(run_dir: Path, message: str) -> None:
    """``<run dir>/error.txt``: how convtrain-report and the sweep summary tell a failed run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(message.rstrip() + "\n")
    except OSError as exc:  # a full or read-only disk: the console has the message anyway
        log.warning("cannot write %s: %s", run_dir / ERROR_FILE, exc.strerror or exc)


def read_overrides(job_dir: Path, strict: bool = False) -> list[str]:
    """The job's command-line overrides (``.hydra/overrides.yaml``), [] when absent.

    An unreadable or invalid file gives [] (the sweep summary still prints), or with
    ``strict`` a ValueError naming the file (``convtrain-report`` must not show a row
    without its settings)."""
    import yaml  # noqa: PLC0415

    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        items = yaml.safe_load(path.read_text()) or []
    except OSError as exc:
        if strict:
            raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        return []
    except UnicodeDecodeError:
        if strict:
            raise ValueError(f"{path}: not text (a binary or damaged file)") from None
        return []
    except yaml.YAMLError as exc:
        if strict:
            from convtrain.app.yaml_errors import yaml_error_line  # noqa: PLC0415

            raise ValueError(yaml_error_line(exc, str(path))) from None
        return []
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        if strict:
            raise ValueError(f"{path}: not a list of overrides (Hydra writes one "
                             "'- key=value' line per override)")
        return []
    return items


def failed_jobs() -> list[tuple[Path, str]]:
    """``(job dir, first line of its error)`` for every job of this process's sweep that failed."""
    if _sweep is None:
        return []
    root, started = _sweep
    found = list(_refused)  # this process's sweep's (a job's directory may lie elsewhere)
    if not root.is_dir():
        return found
    found += _refused_in_workers(root, started)
    for path in root.rglob(ERROR_FILE):
        try:
            if path.stat().st_mtime < started:
                continue
        except OSError:
            continue
        error = first_error_line(path.parent)
        if error is not None and all(path.parent != job_dir for job_dir, _ in found):
            found.append((path.parent, error))
    return sorted(found, key=lambda item: job_sort_key(root, item[0]))


def first_error_line(job_dir: Path) -> str | None:
    """The first line of the job's ``error.txt`` ("" if empty), None when it has none."""
    try:
        lines = (job_dir / ERROR_FILE).read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[0] if lines else ""


def jobs_started() -> int:
    """How many jobs of this process's sweep have started (each writes ``.hydra/``)."""
    return len(_started_job_dirs())


def _started_job_dirs() -> set[Path]:
    if _sweep is None or not _sweep[0].is_dir():
        return set()
    root, started = _sweep
    return {path.parent.parent for path in root.rglob("overrides.yaml")
            if path.parent.name == ".hydra" and path.stat().st_mtime >= started}


def job_sort_key(root: Path, job_dir: Path) -> tuple:
    """Natural order of job directories under ``root`` (``2`` before ``10``)."""
    rel = Path(_relative(root, job_dir)).parts
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in rel)


def _relative(root: Path, job_dir: Path) -> str:
    try:
        return job_dir.relative_to(root).as_posix()
    except ValueError:  # a hydra.sweep.subdir outside the sweep directory
        return str(job_dir)


def summary_line(failures: list[tuple[Path, str]]) -> str:
    """``convtrain: 1 of 4 jobs failed in DIR (...): job 1 (model.layers.conv1.filters=0): ...``."""
    assert _sweep is not None
    root = _sweep[0]
    parts = []
    for job_dir, message in failures:
        overrides = " ".join(read_overrides(job_dir))
        rel = _relative(root, job_dir)
        parts.append(f"job {rel} ({overrides}): {message}" if overrides else f"job {rel}: {message}")
    # a failed job's directory may be a link, which the search for started jobs skips
    total = len(_started_job_dirs() | {job_dir for job_dir, _ in failures})
    return (f"convtrain: {len(failures)} of {total} jobs failed in {root} (details in each "
            f"job's log): " + "; ".join(parts))
