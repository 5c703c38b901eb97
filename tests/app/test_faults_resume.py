"""A damaged or incompatible ``trainer.resume`` checkpoint is refused by the preflight,
before the dataset is read (issue #13): the data loader is replaced by one that fails the
test if it is called, so each refusal below is proven to come first. One line, exit 2."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import safetensors.numpy

from convtrain.app import cli
from tests.app import test_cli_errors

convtrain = test_cli_errors.convtrain  # the fixture: the CLI in this process


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A real one-epoch run (digits, the shipped small CNN, SGD) with its checkpoints."""
    cwd = tmp_path_factory.mktemp("finished")
    proc = subprocess.run([sys.executable, "-m", "convtrain", "trainer.max_epochs=1",
                           "trainer.progress=false", "logger.tensorboard=false",
                           "hydra.run.dir=D"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return cwd / "D"


@pytest.fixture
def no_data(monkeypatch):
    """Reading the dataset fails the test: whatever is refused must be refused before."""
    def load_dataset(*args, **kwargs):
        raise AssertionError("the dataset was read before the checkpoint was checked")
    monkeypatch.setattr("convtrain.data.load_dataset", load_dataset)


def damaged_copy(run_dir, tmp_path, change):
    """``tmp_path/bad.safetensors``: the run's last checkpoint with ``change(tensors, meta)``
    applied (the header's convtrain metadata kept otherwise)."""
    source = run_dir / "checkpoints" / "last.safetensors"
    tensors = safetensors.numpy.load_file(str(source))
    with safetensors.safe_open(str(source), "np") as f:
        header = dict(f.metadata())
    [meta_key] = header
    meta = json.loads(header[meta_key])
    change(tensors, meta)
    path = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(tensors, str(path), metadata={meta_key: json.dumps(meta)})
    return path


def refused(convtrain, capsys, *overrides):
    assert convtrain("trainer.max_epochs=3", "hydra.run.dir=R", *overrides) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("convtrain: error: "), err
    return err.removeprefix("convtrain: error: ")


def test_a_missing_checkpoint(convtrain, capsys, no_data, tmp_path):
    line = refused(convtrain, capsys, f"trainer.resume={tmp_path / 'nope.safetensors'}")
    assert line.startswith("trainer.resume: checkpoint not found:"), line


def test_a_file_that_is_not_safetensors(convtrain, capsys, no_data, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("epoch: 3\n")
    line = refused(convtrain, capsys, f"trainer.resume={bad}")
    assert line.startswith(f"trainer.resume: checkpoint '{bad}' is corrupt or unreadable"), line


def test_a_nan_weight(convtrain, capsys, no_data, finished, tmp_path):
    def poison(tensors, meta):
        tensors["conv2.weight"][0, 0, 0, 0] = np.nan
    bad = damaged_copy(finished, tmp_path, poison)
    line = refused(convtrain, capsys, f"trainer.resume={bad}")
    assert line.startswith(f"trainer.resume: checkpoint '{bad}': model.conv2.weight holds NaN"), \
        line


def test_another_optimizer(convtrain, capsys, no_data, finished):
    line = refused(convtrain, capsys, f"trainer.resume={finished}", "optimizer=adam")
    assert line.endswith("the checkpoint was trained with optimizer 'sgd', this run uses "
                         "'adam' (set optimizer=sgd)"), line


def test_another_architecture(convtrain, capsys, no_data, finished):
    line = refused(convtrain, capsys, f"trainer.resume={finished}",
                   "model.layers.conv2.filters=8")
    assert line.startswith(f"resume '{finished / 'checkpoints' / 'last.safetensors'}': "), line
    assert "conv2.weight" in line and "(32, 16, 3, 3)" in line and "(8, 16, 3, 3)" in line, line


def test_a_checkpoint_whose_epochs_are_all_done(convtrain, capsys, no_data,
                                                finished):
    line = refused(convtrain, capsys, f"trainer.resume={finished}", "trainer.max_epochs=1")
    assert line.endswith("the checkpoint already completed 1 epochs; set trainer.max_epochs "
                         "above 1 to train further"), line


def test_a_header_without_its_epoch(convtrain, capsys, no_data, finished,
                                    tmp_path):
    bad = damaged_copy(finished, tmp_path, lambda tensors, meta: meta.pop("epoch"))
    line = refused(convtrain, capsys, f"trainer.resume={bad}")
    assert line.startswith(f"trainer.resume: checkpoint '{bad}': "), line
    assert "epoch" in line, line


def test_a_fitting_checkpoint_passes_the_preflight(convtrain, capsys, no_data,
                                                   finished):
    """The same checks accept a checkpoint that fits: only the (patched) data load stops it
    (an AssertionError is a bug to the CLI: exit 1 with its traceback)."""
    assert convtrain("trainer.max_epochs=3", "hydra.run.dir=R",
                     f"trainer.resume={finished}") == 1
    assert "the dataset was read" in capsys.readouterr().err


def test_task_summary_does_not_check_the_checkpoint(convtrain, capsys, monkeypatch,
                                                    finished):
    monkeypatch.setattr(sys, "argv", ["convtrain", "task=summary", "hydra.run.dir=R",
                                      f"trainer.resume={finished}", "model.layers.conv2.filters=8"])
    cli.main()  # no SystemExit: a summary resumes nothing
    assert "Total params" in capsys.readouterr().out
