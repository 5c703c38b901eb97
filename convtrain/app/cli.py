"""The ``convtrain`` command: a Hydra app that composes ``configs/train.yaml`` and trains.

``convtrain task=summary`` prints the model table without training. User mistakes -- a
:class:`~convtrain.errors.ConfigError` or :class:`~convtrain.errors.DataError` (unknown keys,
wrong types, bad values, impossible shapes, missing data files) or a config error caught by
Hydra/OmegaConf -- are printed as one line naming the key, without a traceback, exit status 2;
``HYDRA_FULL_ERROR=1`` shows the traceback. A check that ran and failed (``task=gradcheck``:
:class:`~convtrain.errors.CheckFailed`) prints its verdict as one line, exit status 1. Anything else is a bug, and a bug report needs its
traceback: :class:`~convtrain.errors.InternalError` and every other exception go to Hydra's
reporter, which prints it, exit status 1.

In a ``-m`` sweep a failing job does not stop the others: its error goes to its own log and
``error.txt``, and the command ends with one line listing the failed jobs and exit status 1.

Ctrl-C (SIGINT) or SIGTERM stops training cleanly (:mod:`convtrain.training.interrupts`): one
line saying where it stopped and the command that resumes it, exit status 130 / 143; in a
sweep the remaining jobs are not started.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from convtrain.app import rundir, sweep
from convtrain.app.rundir import RunDirError
from convtrain.app.schema import register_configs
from convtrain.errors import CheckFailed, ConfigError
from convtrain.training.interrupts import TrainingInterrupted, exit_status, signal_name
from convtrain.app.hydra_errors import config_error_line, explain, friendly_errors, print_error

log = logging.getLogger("convtrain")


def config_dir() -> str:
    """Absolute path of the shipped configs: inside the installed package, else the repo's."""
    package = Path(__file__).resolve().parents[1]  # convtrain/ (this file is convtrain/app/cli.py)
    package_configs = package / "configs"
    if (package_configs / "train.yaml").is_file():
        return str(package_configs)
    return str(package.parent / "configs")


def _describe(exc: Exception, run_dir: Path | None = None) -> str | None:
    """The one-line message of a user mistake or of the user's disk (full, read-only, no
    permission), None for anything else (a bug, InternalError included)."""
    if isinstance(exc, ConfigError):  # DataError too
        return str(exc)
    if isinstance(exc, OSError):
        return rundir.describe_os_error(exc, run_dir)
    if isinstance(exc, OmegaConfBaseException):  # e.g. an interpolation that does not resolve
        return explain(exc)
    return None


def _quiet_log_file_errors() -> None:
    """A log file that cannot be written (disk full) is closed and dropped, instead of
    ``logging`` printing a traceback for every record: the run's own one-line error (a full
    disk hits the checkpoints and metrics.json too) tells the user."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            def handle_error(record: logging.LogRecord, handler: logging.Handler = handler) -> None:
                root.removeHandler(handler)
                with contextlib.suppress(Exception):
                    handler.close()
            handler.handleError = handle_error  # type: ignore[method-assign]


def _log_to_files(message: str) -> None:
    """Put ``message`` in the run's log file only: the console gets it once, from stderr."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def _app(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    in_sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    # a job run by a launcher in a worker process (joblib, submitit, ray): its sweep's main
    # process reports it (the joblib sweep's one line after a signal, else as a failed job)
    in_worker = in_sweep and sweep.current_sweep() is None
    _quiet_log_file_errors()
    launcher_sigterm = None  # the worker's SIGTERM handler (submitit's), put back at the end
    if in_worker:
        if sweep.skipped_as_interrupted(Path(HydraConfig.get().sweep.dir)):
            log.info("job not run: the sweep was interrupted before it started")
            return None
        if threading.current_thread() is threading.main_thread():
            # as in the main process: SIGTERM before training is one recorded line too
            launcher_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run_job(cfg, run_dir, in_sweep, in_worker)
    finally:
        if launcher_sigterm is not None:
            signal.signal(signal.SIGTERM, launcher_sigterm)


def _run_job(cfg: DictConfig, run_dir: Path, in_sweep: bool, in_worker: bool) -> float | None:
    from convtrain.app.run import run  # noqa: PLC0415 - keeps `convtrain --help` fast

    try:
        # a sweep job locks its own directory; a single run's was locked by RunDirGuard
        rundir.hold(run_dir)
    except RunDirError as exc:
        # the directory belongs to another live run: write nothing into it (neither its log
        # nor error.txt); the sweep counts the job as failed
        if in_sweep:
            print(f"convtrain: job {run_dir} not run: {exc}", file=sys.stderr)
            sweep.record_refused(run_dir, str(exc), Path(HydraConfig.get().sweep.dir))
            return None
        print_error(str(exc))
        sys.exit(2)
    try:
        if in_worker:
            # a submitit_local job starts with the stop signals blocked (convtrain.app.sweep);
            # one that came meanwhile is handled here, as a stop before training
            sweep.take_back_stop_signals()
        if in_sweep:
            # the sweep directory was checked as a whole (RunDirGuard); this job's part of it
            rundir.replace_job_results(run_dir, cfg)
        sweep.clear_failure(run_dir)
        from convtrain.app.preflight import check_overrides  # noqa: PLC0415

        check_overrides(list(HydraConfig.get().overrides.task))
        return run(cfg, run_dir=run_dir)
    except TrainingInterrupted as exc:
        message = exc.message(_resume_command(run_dir) if exc.resumable else None)
        _log_to_files(message)
        if not exc.finished:  # a run whose epochs are all done is complete, not failed
            sweep.write_error(run_dir, message)
        if in_worker:  # returning lets the launcher wait for the other jobs' clean stop
            return None
        print(f"convtrain: {message}", file=sys.stderr)
        sys.exit(exc.exit_status)
    except CheckFailed as exc:
        # the task printed its report; its verdict is the one line (no traceback), exit 1
        if in_sweep:
            sweep.record_failure(run_dir, exc, str(exc))
            return None
        _log_to_files(str(exc))
        print(f"convtrain: {exc}", file=sys.stderr)
        sys.exit(1)
    except (KeyboardInterrupt, _Terminated) as exc:
        if not in_worker:
            raise
        signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        message = (f"interrupted ({signal_name(signum)}) before training began: nothing to "
                   f"resume, run the job again")
        _log_to_files(message)
        sweep.write_error(run_dir, message)
        return None
    except Exception as exc:
        message = _describe(exc, run_dir)
        if in_sweep:
            # the other jobs go on; the main process lists this one at the end
            sweep.record_failure(run_dir, exc, message)
            return None
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _log_to_files(message)
        sweep.write_error(run_dir, message)
        rundir.restore_start_files(run_dir)  # a refused resume leaves the run as it was
        print_error(message)
        sys.exit(2)
    finally:
        rundir.release(run_dir)


def _resume_command(run_dir: Path) -> str:
    """The command that resumes this job in place: its own overrides (a sweep job's values),
    the config flags it was started with, ``trainer.resume`` and ``hydra.run.dir``."""
    keep = [o for o in HydraConfig.get().overrides.task
            if o.split("=", 1)[0].lstrip("+~") != "trainer.resume"]
    return shlex.join(["convtrain", *_config_flags(), *keep, f"trainer.resume={run_dir}",
                       f"hydra.run.dir={run_dir}"])


def _config_flags() -> list[str]:
    """``--config-path``, ``--config-dir`` and ``--config-name`` as this run was started with,
    read back from Hydra's record of its config sources: a sweep job in a launcher's worker
    process (joblib, submitit) has the worker's ``sys.argv``, not the command's."""
    hydra_cfg = HydraConfig.get()
    flags = []
    for source in hydra_cfg.runtime.config_sources:
        if source.schema != "file":
            continue
        if source.provider == "main" and Path(source.path).resolve() != \
                Path(config_dir()).resolve():
            flags += ["--config-path", source.path]
        elif source.provider == "command-line":
            flags += ["--config-dir", source.path]
    if hydra_cfg.job.config_name != "train":
        flags += ["--config-name", hydra_cfg.job.config_name]
    return flags


class _Terminated(BaseException):
    """SIGTERM outside training (inside it the trainer stops cleanly)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def _raised_by_hydra(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is Hydra's own code (not convtrain's)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", ""))
    return module == "hydra" or module.startswith("hydra.")


def _report_failed_jobs() -> bool:
    failures = sweep.failed_jobs()
    if failures:
        print(sweep.summary_line(failures), file=sys.stderr)
    return bool(failures)


def main() -> None:
    """Console-script entry point (also ``python -m convtrain``).

    Exit status: 0 success, 1 a job of a sweep failed, a check failed (``task=gradcheck``
    above its threshold: one line) or a bug (printed with its traceback), 2 a user mistake
    (one line), 130 / 143 stopped by SIGINT (Ctrl-C) / SIGTERM (one line).
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with friendly_errors():
            _app()
    except SystemExit as exc:
        if exc.code not in (exit_status(signal.SIGINT), exit_status(signal.SIGTERM)):
            _report_failed_jobs()  # after an interrupt its one line is the only one
        raise
    except (KeyboardInterrupt, _Terminated, sweep.SweepStopped) as exc:
        signum = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
        waiting_line = sweep.waiting_line(signum)  # a SLURM or Ray sweep: jobs elsewhere
        if sweep.stop_signal() is not None:  # the second signal to a sweep's main process
            print(f"convtrain: interrupted again ({signal_name(signum)}): the sweep in "
                  f"{sweep.current_sweep()} stopped at once; its running jobs were ended "
                  f"without finishing their epoch (their checkpoints are whole, each holds its "
                  f"last completed epoch)", file=sys.stderr)
        elif waiting_line is not None:
            print(waiting_line, file=sys.stderr)
        else:
            print(f"convtrain: interrupted ({signal_name(signum)}) outside the training loop, "
                  f"no epoch was in progress", file=sys.stderr)
        sys.exit(exit_status(signum))
    except ValueError as exc:
        # Hydra checks its command-line flags outside its error reporter ("Only one of --run,
        # --multirun, --cfg, ... can be specified"); a ValueError from anywhere else is a bug
        if not _raised_by_hydra(exc) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print_error(str(exc))
        sys.exit(2)
    except Exception as exc:
        # `--help`, `--hydra-help` and `--info` compose the config outside Hydra's error
        # reporter: a bad override or a broken config file reaches us raw (a run, `--cfg` and
        # a sweep go through friendly_errors, and the app catches its own errors)
        message = config_error_line(exc)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print_error(message)
        sys.exit(2)
    sweep.exit_if_interrupted()
    if _report_failed_jobs():
        sys.exit(1)


if __name__ == "__main__":
    main()
