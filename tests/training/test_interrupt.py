"""Ctrl-C (SIGINT) and SIGTERM during training: a clean stop, one line, exit 130 / 143, and a
resume that replays the interrupted epoch and ends bitwise equal to an uninterrupted run.

In-process tests send the signal to this very process from a hook at an exact step; the
end-to-end ones send it to a real ``convtrain`` process once its log shows progress.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from convtrain.training import checkpointing, interrupts
from convtrain.training.checkpoint import load_checkpoint
from convtrain.training.hooks import Hook
from convtrain.training.interrupts import InterruptGuard, TrainingInterrupted
from tests.app.test_cli_errors import convtrain  # noqa: F401 - the in-process CLI fixture
from tests.training.test_trainer import blobs, make_trainer, real_model

# metrics.json keys that measure time, not results
TIMING = {"wall_time_s", "train_images_per_s"}
STEPS_PER_EPOCH = 6  # blobs(): 96 training samples, batch_size 16


class SignalAt(Hook):
    """Sends ``signum`` to this process after global step ``step`` and records the run
    directory's files as they were at that moment."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum
        self.files_at_signal: dict[str, bytes] | None = None

    def on_train_batch_end(self, state):
        if state.global_step == self.step:
            self.files_at_signal = files(state.run_dir)
            os.kill(os.getpid(), self.signum)


def files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes()
            for p in sorted(Path(run_dir).rglob("*")) if p.is_file()
            and "tensorboard" not in p.parts}


def trainer(run_dir, data, *, seed=1, max_epochs=3, **kw):
    return make_trainer(run_dir, data, real_model(data, seed=seed),
                        opt={"name": "adam", "lr": 0.02}, max_epochs=max_epochs,
                        sched={"name": "cosine", "t_max": 3}, seed=7, **kw)


def assert_same_results(a: Path, b: Path):
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert {k: v for k, v in ma.items() if k not in TIMING} == \
        {k: v for k, v in mb.items() if k not in TIMING}
    for name in ("last", "best"):
        ta, tb = (load_file(str(d / "checkpoints" / f"{name}.safetensors")) for d in (a, b))
        assert ta.keys() == tb.keys()
        for key in ta:
            np.testing.assert_array_equal(ta[key], tb[key], err_msg=f"{name}: {key}")
        ja, jb = (load_checkpoint(d / "checkpoints" / f"{name}.safetensors").meta
                  for d in (a, b))
        for key in ("epoch", "global_step", "rng", "best"):
            assert ja[key] == jb[key], (name, key)


# --- in process: exact step ------------------------------------------------------------
@pytest.mark.parametrize("signum, step", [(signal.SIGINT, STEPS_PER_EPOCH + 3),
                                          (signal.SIGTERM, 2)])
def test_interrupt_stops_at_the_step_and_resume_is_bitwise_identical(tmp_path, signum, step):
    data = blobs()
    trainer(tmp_path / "full", data).fit()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)

    hook = SignalAt(step, signum)
    part = tmp_path / "part"
    with pytest.raises(TrainingInterrupted) as info:
        trainer(part, data, hooks=[hook]).fit()
    exc = info.value
    completed = step // STEPS_PER_EPOCH  # epochs done before the signal
    assert (exc.signum, exc.epoch, exc.step) == (signum, completed + 1, step)
    assert exc.exit_status == 128 + signum
    assert exc.saved == (completed, completed * STEPS_PER_EPOCH)
    # the handlers in place before fit() are back
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before

    last = load_checkpoint(part / "checkpoints" / "last.safetensors").meta
    assert (last["epoch"], last["global_step"]) == exc.saved
    after = files(part)
    # nothing written before the signal changed; metrics.json claims no half epoch
    written = set(after) - set(hook.files_at_signal)
    assert {k: after[k] for k in hook.files_at_signal} == hook.files_at_signal
    if completed:
        assert written == set()
        assert json.loads(after["metrics.json"])["epochs_completed"] == completed
    else:
        # interrupted in the first epoch: `last` is the state before it was written on the way out
        assert written == {"checkpoints/last.safetensors", "checkpoints/last.json"}
        assert "metrics.json" not in after
    message = str(exc)
    assert f"at epoch {completed + 1}, step {step}" in message
    assert f"checkpoints/last holds epoch {completed} (step {completed * 6})" in message
    assert f"trainer.resume={part}" in message

    # resumed in place with another init seed: everything comes from the checkpoint
    trainer(part, data, seed=99, resume=str(part)).fit()
    assert_same_results(tmp_path / "full", part)


def test_interrupt_after_evaluation_and_without_checkpoints(tmp_path):
    """A signal during the epoch's evaluation abandons the epoch; without checkpoints the
    line says there is nothing to resume from."""
    data = blobs()

    class SignalInEvaluation(Hook):
        def on_epoch_start(self, state):
            self.epoch = state.epoch

        def on_train_batch_end(self, state):
            if self.epoch == 1 and state.global_step == 2 * STEPS_PER_EPOCH:
                os.kill(os.getpid(), signal.SIGINT)  # noticed after the epoch's last batch

    with pytest.raises(TrainingInterrupted) as info:
        trainer(tmp_path, data, checkpoint=False, hooks=[SignalInEvaluation()]).fit()
    assert info.value.completed == 1 and info.value.saved is None
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"] == 1
    assert not (tmp_path / "checkpoints").exists()
    assert str(info.value) == (
        f"interrupted (SIGINT) at epoch 2, step 12; metrics.json holds epoch 1, and with "
        f"trainer.checkpoint=false there is no checkpoint to resume from in {tmp_path}")


def test_signal_during_the_last_epochs_files_keeps_the_complete_run(tmp_path):
    data = blobs()

    class SignalAtEnd(Hook):
        def on_epoch_end(self, state):
            if state.epoch + 1 == state.max_epochs:
                os.kill(os.getpid(), signal.SIGTERM)

    full = trainer(tmp_path / "full", data)
    full.fit()
    with pytest.raises(TrainingInterrupted) as info:
        trainer(tmp_path / "b", data, hooks=[SignalAtEnd()]).fit()
    assert info.value.finished and info.value.exit_status == 143
    assert "after all 3 epochs were done" in str(info.value)
    assert_same_results(tmp_path / "full", tmp_path / "b")


def test_full_disk_on_the_way_out_is_one_line_naming_the_cause(tmp_path, monkeypatch, caplog):
    """Interrupted in the first epoch on a full disk: the epoch-0 ``last`` cannot be written.
    The interrupt's line names the file and the reason; a hook's disk error in ``on_fit_end``
    is logged as one line, without a traceback."""
    def full_disk(directory, name, *args):
        raise OSError(errno.ENOSPC, "No space left on device",
                      str(Path(directory) / f"{name}.safetensors"))

    class FailsToClose(Hook):
        def on_fit_end(self, state, error):
            raise OSError(errno.ENOSPC, "No space left on device",
                          str(state.run_dir / "tensorboard" / "events"))

    monkeypatch.setattr(checkpointing, "save_checkpoint", full_disk)
    with caplog.at_level(logging.INFO, logger="convtrain"), \
            pytest.raises(TrainingInterrupted) as info:
        trainer(tmp_path, blobs(), hooks=[SignalAt(2, signal.SIGTERM), FailsToClose()]).fit()
    exc = info.value
    assert exc.exit_status == 143 and exc.saved is None
    assert str(exc) == (
        f"interrupted (SIGTERM) at epoch 1, step 2; no epoch was completed, but checkpoints/last "
        f"could not be written: cannot write {tmp_path / 'checkpoints' / 'last.safetensors'}: "
        f"No space left on device")
    [record] = [r for r in caplog.records if "could not finish" in r.getMessage()]
    assert record.getMessage() == (f"FailsToClose could not finish: [Errno 28] No space left on "
                                   f"device: '{tmp_path / 'tensorboard' / 'events'}'")
    assert all(r.exc_info is None for r in caplog.records)


def test_a_signal_after_the_last_epoch_does_not_mark_the_run_failed(  # noqa: F811
        convtrain, tmp_path, monkeypatch):
    """SIGTERM while the last epoch's files were written: exit 143, but the complete run has
    no error.txt (convtrain-report would list it as failed); a stale one is removed."""
    run_dir = tmp_path / "r"

    def finished(cfg, *, run_dir):
        raise TrainingInterrupted(signal.SIGTERM, epoch=3, step=18, completed=3, max_epochs=3,
                                  run_dir=run_dir, checkpointing=True, saved=(3, 18))

    monkeypatch.setattr("convtrain.app.run.run", finished)
    run_dir.mkdir()
    (run_dir / "error.txt").write_text("an earlier failure\n")
    assert convtrain(f"hydra.run.dir={run_dir}") == 143
    assert not (run_dir / "error.txt").exists()


def test_an_ignored_sigint_stays_ignored(tmp_path):
    """A background job of a non-interactive shell inherits SIGINT ignored: a Ctrl-C meant
    for the script must not stop its training."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        guard = InterruptGuard()
        with guard:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) == guard._handle
            os.kill(os.getpid(), signal.SIGINT)
            assert guard.signum is None
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        trainer(tmp_path, blobs(), max_epochs=1, hooks=[SignalAt(2, signal.SIGINT)]).fit()
        assert json.loads((tmp_path / "metrics.json").read_text())["epochs_completed"] == 1
    finally:
        signal.signal(signal.SIGINT, previous)


def test_second_signal_exits_at_once(monkeypatch, capfd):
    exits = []
    monkeypatch.setattr(interrupts.os, "_exit", exits.append)
    guard = InterruptGuard()
    with guard:
        os.kill(os.getpid(), signal.SIGINT)
        assert guard.signum == signal.SIGINT and exits == []
        os.kill(os.getpid(), signal.SIGTERM)
    assert exits == [130]  # the first signal's status
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted again (SIGTERM): stopped at once")


# --- a real convtrain process, a real signal -------------------------------------------
ARGS = ["data.subset=600", "trainer.batch_size=2", "trainer.max_epochs=3",
        "logger.png=false", "seed=3"]
LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[\w+\] - ")


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_after(proc: subprocess.Popen, pattern: str, signum: int) -> str:
    """Send ``signum`` once a log line (on stdout) contains ``pattern``; stdout and stderr."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if pattern in line:
            proc.send_signal(signum)
            break
    out, err = proc.communicate(timeout=300)
    return "".join(lines) + out, err


def user_lines(stderr: str) -> list[str]:
    """stderr without the log records (which the run's log file holds too)."""
    return [line for line in stderr.splitlines() if line.strip() and not LOG_LINE.match(line)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_real_signal_to_convtrain_then_the_printed_command_resumes_bitwise(tmp_path, signum):
    full, part = tmp_path / "full", tmp_path / "part"
    proc = start(tmp_path, *ARGS, f"hydra.run.dir={full}")
    assert proc.communicate(timeout=300) and proc.returncode == 0

    proc = start(tmp_path, *ARGS, f"hydra.run.dir={part}")
    stdout, stderr = signal_after(proc, "epoch 1/3", signum)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    name = signal.Signals(signum).name
    match = re.fullmatch(rf"convtrain: interrupted \({name}\) at epoch (\d), step (\d+); "
                         r"checkpoints/last holds epoch (\d) \(step (\d+)\), a resume continues "
                         r"with epoch \d from its start; resume with `(.*)`", line)
    assert match, line
    epoch, step, saved_epoch, saved_step = map(int, match.groups()[:4])
    assert saved_epoch in (epoch - 1, epoch) and step >= saved_step
    last = json.loads((part / "checkpoints" / "last.json").read_text())
    assert (last["epoch"], last["global_step"]) == (saved_epoch, saved_step)
    metrics = json.loads((part / "metrics.json").read_text())
    assert metrics["epochs_completed"] == saved_epoch
    assert list((part / "checkpoints").glob("*.tmp*")) == []

    command = shlex.split(match.group(5))
    assert command[0] == "convtrain" and f"trainer.resume={part}" in command
    resumed = subprocess.run([sys.executable, "-m", "convtrain", *command[1:]], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(full, part)
    assert not (part / "error.txt").exists()


# ``convtrain`` (its very ``main``) with two lines on stdout: once the first training batch
# has begun and once the guard has handled the first signal, so that a test sends the second
# signal only then (signals sent back to back are merged into one, which only stops cleanly)
TRACED_CONVTRAIN = """
import os, sys
from convtrain.app import cli
from convtrain.training import trainer
from convtrain.training.interrupts import InterruptGuard
batches, handle = trainer.iterate_batches, InterruptGuard._handle
def traced_batches(*args, **kwargs):
    for batch in batches(*args, **kwargs):
        os.write(1, b"test: batch begins\\n")
        yield batch
def traced_handle(self, signum, frame):
    first = self.signum is None
    handle(self, signum, frame)
    if first:
        os.write(1, b"test: first signal handled\\n")
trainer.iterate_batches, InterruptGuard._handle = traced_batches, traced_handle
sys.argv[0] = "convtrain"
cli.main()
"""


@pytest.mark.slow
def test_second_ctrl_c_to_convtrain_exits_at_once_without_traceback(tmp_path):
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # one training batch of about 2 s: the clean stop after the first signal waits for the
    # end of the batch, long after the second signal
    proc = subprocess.Popen(
        [sys.executable, "-c", TRACED_CONVTRAIN, "data.subset=600", "trainer.batch_size=540",
         "trainer.max_epochs=3", "logger.png=false",
         "model.layers.conv1.filters=512", "model.layers.conv2.filters=512",
         f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(("test: batch begins", "test: first signal handled")):
            proc.send_signal(signal.SIGINT)
        if line.startswith("test: first signal handled"):
            break
    stdout, stderr = proc.communicate(timeout=300)
    stdout = "".join(lines) + stdout
    assert "test: first signal handled" in stdout, stdout + stderr
    assert proc.returncode == 130 and "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    assert line.startswith("interrupted again (SIGINT): stopped at once"), line
    # stopped at once: the epoch-0 `last` of a clean stop in the first epoch was not written
    assert not (run_dir / "checkpoints" / "last.safetensors").exists()
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep(tmp_path):
    proc = start(tmp_path, "-m", "seed=3,4,5", *ARGS[:-1], f"hydra.sweep.dir={tmp_path / 's'}")
    stdout, stderr = signal_after(proc, "epoch 1/3", signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    assert line.startswith("convtrain: interrupted (SIGINT) at epoch ")
    command = shlex.split(line.split("resume with `")[1].rstrip("`"))
    assert "seed=3" in command and f"trainer.resume={tmp_path / 's' / '0'}" in command
    # the running job stopped with its files whole; the others never started
    assert not (tmp_path / "s" / "1").exists() and not (tmp_path / "s" / "2").exists()
    last = json.loads((tmp_path / "s" / "0" / "checkpoints" / "last.json").read_text())
    assert last["epoch"] >= 1
    # the job's own command (its seed, Hydra's spelling of the other values) resumes it
    resumed = subprocess.run([sys.executable, "-m", "convtrain", *command[1:]], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "s" / "0" / "metrics.json").read_text())[
        "epochs_completed"] == 3



def start_in_own_group(cwd: Path, *args: str) -> subprocess.Popen:
    """convtrain as the leader of its own process group: a launcher's worker processes join
    it, and ``os.killpg`` signals them all, as Ctrl-C in a terminal does."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def signal_group_after(proc: subprocess.Popen, pattern: str, signum: int) -> tuple[str, str]:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if pattern in line:
            os.killpg(proc.pid, signum)
            break
    out, err = proc.communicate(timeout=300)
    return "".join(lines) + out, err


def resume_from_error_txt(cwd: Path, job: Path) -> None:
    """The command in the job's error.txt resumes it in place to its last epoch."""
    command = shlex.split((job / "error.txt").read_text().split("resume with `")[1].split("`")[0])
    assert command[0] == "convtrain" and f"trainer.resume={job}" in command
    resumed = subprocess.run([sys.executable, "-m", "convtrain", *command[1:]], cwd=cwd,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((job / "metrics.json").read_text())["epochs_completed"] == 3
    assert not (job / "error.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_stops_a_joblib_sweep_cleanly(tmp_path, signum):
    """Ctrl-C reaches the main process and the joblib workers: each worker's trainer stops its
    job cleanly (checkpoint written, resume command in its error.txt), the main process waits
    for them instead of killing them, starts no further job, and prints one line."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "s"
    proc = start_in_own_group(tmp_path, "-m", "seed=3,4,5", *ARGS[:-1], "hydra/launcher=joblib",
                              "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    stdout, stderr = signal_group_after(proc, "epoch 1/3", signum)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    assert line == (f"convtrain: interrupted ({name}): the sweep in {sweep} stopped; jobs 0, 1 "
                    "stopped cleanly (each resumes in place with the command in its error.txt); "
                    "no further job was started"), line
    for job in (sweep / "0", sweep / "1"):
        error = (job / "error.txt").read_text()
        assert error.startswith(f"interrupted ({name}) at epoch "), error
        last = json.loads((job / "checkpoints" / "last.json").read_text())
        assert f"checkpoints/last holds epoch {last['epoch']} " in error
        assert list(job.rglob("*.tmp")) == []
    # the third job never trained
    assert not (sweep / "2" / "checkpoints").exists() and not (sweep / "2" / "metrics.json").exists()
    assert not (sweep / ".convtrain.interrupted").exists()
    resume_from_error_txt(tmp_path, sweep / "0")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_stops_a_basic_sweep_cleanly(tmp_path, signum):
    sweep = tmp_path / "s"
    proc = start_in_own_group(tmp_path, "-m", "seed=3,4", *ARGS[:-1], f"hydra.sweep.dir={sweep}")
    stdout, stderr = signal_group_after(proc, "epoch 1/3", signum)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    assert line.startswith(f"convtrain: interrupted ({signal.Signals(signum).name}) at epoch ")
    assert not (sweep / "1").exists()
    resume_from_error_txt(tmp_path, sweep / "0")
