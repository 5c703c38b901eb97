"""Failed jobs in a ``-m`` sweep: recorded by the job, summarised by the main process.

A job that fails inside a sweep must not stop the others (a sweeper would abort the sweep as
soon as it sees a raised exception), so :func:`record_failure` writes the error to the job's own
log and to ``<job dir>/error.txt``, and the job returns None (Optuna marks the trial failed).
Launchers may run jobs in other processes or on other machines (joblib, submitit), so the
main process learns about failures from those files: :class:`SweepMonitor`, a Hydra callback
configured in ``configs/hydra/default.yaml``, notes where and when the sweep started, and
:func:`failed_jobs` lists the ``error.txt`` files written since then.
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
#: in the sweep directory: the sweep was interrupted, jobs not yet started are skipped
INTERRUPTED_FILE = ".convtrain.interrupted"


class SweepMonitor(Callback):
    """Remembers the sweep directory so that the CLI can list failed jobs at the end, and
    stops a joblib sweep (jobs in worker processes) cleanly on SIGINT / SIGTERM."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep
        # one second of slack: file mtimes may be coarser than time.time()
        _sweep = (Path(str(config.hydra.sweep.dir)).absolute(), time.time() - 1.0)
        with contextlib.suppress(OSError):  # left by a sweep stopped at once
            (_sweep[0] / INTERRUPTED_FILE).unlink(missing_ok=True)
        if config.hydra.launcher.get("_target_") == _JOBLIB_LAUNCHER:
            _catch_stop_signals()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _restore_signal_handlers()


# --- stopping a sweep whose jobs run in joblib's worker processes ---
#
# Ctrl-C in a terminal signals the whole process group: the launcher's worker processes get
# the signal themselves, and their trainer stops each running job cleanly (its `last`
# checkpoint written, its error.txt holding the command that resumes it). The main process
# must not stop at once: a launcher interrupted in its wait (joblib) kills its workers, which
# may be writing that checkpoint. So the main process only notes the signal (and marks the
# sweep directory so that no further job starts), waits for the running jobs to end, and
# then prints one line and exits 130 / 143. A second signal stops it at once.

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
