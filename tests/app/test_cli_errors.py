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
    # the job's HydraConfig stays set after the call: tests/conftest.py clears it after every test
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


@pytest.fixture
def broken_config_dir(tmp_path):
    """A user's ``--config-dir`` with an unclosed ``{`` in a primary config and an unclosed
    ``[`` in an optimizer option."""
    user = tmp_path / "user_configs"
    (user / "optimizer").mkdir(parents=True)
    (user / "mine.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: {\n")
    (user / "optimizer" / "broken.yaml").write_text("name: sgd\nlr: [0.1\n")
    return user


@pytest.mark.parametrize("flags", [["--info"], ["--info", "config"], ["--info", "defaults"],
                                   ["--info", "all"], ["--help"], ["--cfg", "job"]])
def test_info_and_help_with_a_broken_user_yaml_are_one_line(convtrain, capsys, broken_config_dir,
                                                            flags):
    assert convtrain(*flags, "--config-dir", str(broken_config_dir), "--config-name", "mine") == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"convtrain: error: {broken_config_dir / 'mine.yaml'}, line 5, column 1: "
                           "invalid YAML: expected the node content, but found '<stream end>' "
                           "(while parsing a flow node)")


@pytest.mark.parametrize("flags", [["--info", "config"], ["--help"]])
def test_info_and_help_with_a_broken_group_option_are_one_line(convtrain, capsys,
                                                               broken_config_dir, flags):
    assert convtrain(*flags, "--config-dir", str(broken_config_dir), "optimizer=broken") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convtrain: error: {broken_config_dir / 'optimizer' / 'broken.yaml'}, "
                          "line 3, column 1: invalid YAML"), err
    assert "\n" not in err


@pytest.mark.parametrize("flags", [["--help"], ["--info", "config"], ["--cfg", "job"]])
@pytest.mark.parametrize("override, expected", [
    ("optimizer.lrr=1", "optimizer.lrr: unknown key; did you mean 'optimizer.lr'?"),
    ("optimizer.lr=abc", "optimizer.lr: Value 'abc' of type 'str' could not be converted to Float"),
    ("optimizer=adamm", "optimizer=adamm: no option 'adamm' in config group 'optimizer'"),
])
def test_help_info_and_cfg_with_a_bad_override_are_one_line(convtrain, capsys, flags, override,
                                                             expected):
    assert convtrain(*flags, override) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convtrain: error: {expected}"), err
    assert "\n" not in err and "Traceback" not in err


def test_a_bug_under_help_keeps_its_traceback(monkeypatch):
    """Only config mistakes become one line: anything else raised under --help is a bug."""
    def broken_help(*args, **kwargs):
        raise KeyError("a bug in the help")

    monkeypatch.setattr("hydra._internal.hydra.Hydra.app_help", broken_help)
    monkeypatch.setattr(sys, "argv", ["convtrain", "--help"])
    with pytest.raises(KeyError, match="a bug in the help"):
        cli.main()
