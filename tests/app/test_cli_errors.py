"""User mistake or bug: what the ``convtrain`` command prints for each, run in process.

A user mistake (ConfigError, DataError) is one line and exit status 2; a bug -- an
InternalError or any other exception -- keeps its traceback and exits with status 1, also as a
job of a ``-m`` sweep (its traceback goes to the job's log, its one-line summary to error.txt).
"""
from __future__ import annotations

import logging
import sys

import pytest

from convtrain.app import cli
from convtrain.errors import ConfigError, DataError, InternalError


@pytest.fixture
def convtrain(monkeypatch, tmp_path):
    """``convtrain(*args)`` runs the CLI in this process in ``tmp_path``; returns the exit code."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    # as in a fresh process: no sweep of an earlier test whose failed jobs the CLI would list
    monkeypatch.setattr("convtrain.app.sweep._sweep", None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # Hydra configures logging for its job

    def call(*args: str) -> int | str | None:
        monkeypatch.setattr(sys, "argv", ["convtrain", *args])
        with pytest.raises(SystemExit) as info:
            cli.main()
        return info.value.code

    yield call
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def failing_run(exc: Exception):
    def run(cfg, *, run_dir):
        raise exc
    return run


@pytest.mark.parametrize("bug", [InternalError("backward() called before forward()"),
                                 ZeroDivisionError("division by zero")])
def test_a_bug_keeps_its_traceback(convtrain, monkeypatch, capsys, bug):
    monkeypatch.setattr("convtrain.app.run.run", failing_run(bug))
    assert convtrain("task=summary") == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err, err
    assert f"{type(bug).__name__}: {bug}" in err
    assert "convtrain: error:" not in err  # not dressed up as a user mistake


@pytest.mark.parametrize("mistake", [ConfigError("optimizer.lr: must be > 0, got -1.0"),
                                     DataError("data.root: no such directory: '/nope'")])
def test_a_user_mistake_is_one_line(convtrain, monkeypatch, capsys, mistake):
    monkeypatch.setattr("convtrain.app.run.run", failing_run(mistake))
    assert convtrain("task=summary") == 2
    err = capsys.readouterr().err
    assert err.strip() == f"convtrain: error: {mistake}"


def test_a_bug_in_a_sweep_job_is_logged_with_its_traceback(convtrain, monkeypatch, tmp_path,
                                                           capsys):
    monkeypatch.setattr("convtrain.app.run.run",
                        failing_run(InternalError("stale im2col cache")))
    assert convtrain("-m", "task=summary", "seed=1,2") == 1
    errors = sorted(tmp_path.rglob("error.txt"))
    assert len(errors) == 2
    for error in errors:
        assert error.read_text().strip() == "InternalError: stale im2col cache"
        log = (error.parent / "convtrain.log").read_text()
        assert "Traceback (most recent call last)" in log and "stale im2col cache" in log
    assert "convtrain: 2 of 2 jobs failed" in capsys.readouterr().err


def test_hydra_flag_mistakes_are_one_line(convtrain, capsys):
    assert convtrain("--cfg", "job", "-m") == 2
    assert capsys.readouterr().err.strip() == (
        "convtrain: error: Only one of --run, --multirun, --cfg, --info and --shell_completion "
        "can be specified")


def test_a_value_error_from_convtrain_itself_is_not_taken_for_a_flag_mistake(monkeypatch):
    def broken_app():
        raise ValueError("a bug in convtrain")

    monkeypatch.setattr(cli, "_app", broken_app)
    monkeypatch.setattr(sys, "argv", ["convtrain"])
    with pytest.raises(ValueError, match="a bug in convtrain"):
        cli.main()
