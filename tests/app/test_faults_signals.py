"""Signals outside the training loop (while the data loads, the model is built): one line,
exit 130 / 143, no traceback (issue #13). Inside the loop: tests/training/test_interrupt.py."""
from __future__ import annotations

import signal

import pytest

from convtrain.app import cli
from tests.app import test_cli_errors

convtrain = test_cli_errors.convtrain  # the fixture: the CLI in this process, its exit code


@pytest.mark.parametrize("raised, status, name", [
    (KeyboardInterrupt, 130, "SIGINT"), (cli._Terminated, 143, "SIGTERM")])
def test_a_signal_while_the_data_loads_is_one_line(convtrain, monkeypatch, capsys, tmp_path,
                                                   raised, status, name):
    def load_dataset(*args, **kwargs):
        raise raised()  # what the signal handlers raise in the main thread
    monkeypatch.setattr("convtrain.data.load_dataset", load_dataset)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # keep pytest's own handlers
    assert convtrain("trainer.max_epochs=1", "hydra.run.dir=D") == status
    err = capsys.readouterr().err
    assert err.strip() == (f"convtrain: interrupted ({name}) outside the training loop, no "
                           "epoch was in progress"), err
    assert not (tmp_path / "D" / ".convtrain.lock").exists()  # the lock went with the run
