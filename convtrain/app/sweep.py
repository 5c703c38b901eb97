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

import logging
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


class SweepMonitor(Callback):
    """Remembers the sweep directory so that the CLI can list failed jobs at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global _sweep
        # one second of slack: file mtimes may be coarser than time.time()
        _sweep = (Path(str(config.hydra.sweep.dir)).absolute(), time.time() - 1.0)


# Jobs of this process refused because their directory belongs to another live run: they
# must not write error.txt there, so the main process learns of them here (in-process
# launchers; a job in another process still fails its sweep through its log line).
_refused: list[tuple[Path, str]] = []


def record_refused(job_dir: Path, message: str) -> None:
    """A job that could not run because its directory is another run's: a failure of the
    sweep, recorded without writing into that directory."""
    _refused.append((Path(job_dir).absolute(), message))


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
    if _sweep is None or not _sweep[0].is_dir():
        return 0
    root, started = _sweep
    return sum(1 for path in root.rglob("overrides.yaml")
               if path.parent.name == ".hydra" and path.stat().st_mtime >= started)


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
    total = max(jobs_started(), len(failures))
    return (f"convtrain: {len(failures)} of {total} jobs failed in {root} (details in each "
            f"job's log): " + "; ".join(parts))
