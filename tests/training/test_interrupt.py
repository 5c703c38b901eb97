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
import threading
import time
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


def test_a_relayed_sigterm_is_the_same_request_a_late_one_stops_at_once(monkeypatch, capfd):
    """srun / submitit relay the scheduler's SIGTERM to the job: a second SIGTERM within the
    window is the same request (a clean stop), one after it (or a Ctrl-C) stops at once."""
    exits = []
    monkeypatch.setattr(interrupts.os, "_exit", exits.append)
    clock = [100.0]
    monkeypatch.setattr(interrupts.time, "monotonic", lambda: clock[0])
    guard = InterruptGuard()
    with guard:
        os.kill(os.getpid(), signal.SIGTERM)
        clock[0] += InterruptGuard.RELAYED_SIGTERM_WINDOW_S / 2
        os.kill(os.getpid(), signal.SIGTERM)
        assert guard.signum == signal.SIGTERM and exits == []
        clock[0] += InterruptGuard.RELAYED_SIGTERM_WINDOW_S
        os.kill(os.getpid(), signal.SIGTERM)
    assert exits == [143]
    assert capfd.readouterr().err.startswith("interrupted again (SIGTERM): stopped at once")


# --- a real convtrain process, a real signal -------------------------------------------
ARGS = ["data.subset=600", "trainer.batch_size=2", "trainer.max_epochs=3",
        "logger.png=false", "seed=3"]
# A sweep's jobs train long enough (about 0.2 s an epoch here) that none can finish before
# every job has started and the signal arrives, on a loaded 2-core machine too: with 3 epochs
# job 0 sometimes ended before job 1 logged its first epoch.
SWEEP_EPOCHS = 20
FIRST_EPOCH = f" 1/{SWEEP_EPOCHS} "  # in "epoch  1/20  lr ...", the log line after epoch 1
SWEEP_ARGS = ["data.subset=600", "trainer.batch_size=2", f"trainer.max_epochs={SWEEP_EPOCHS}",
              "logger.png=false"]
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
    proc = start(tmp_path, "-m", "seed=3,4,5", *SWEEP_ARGS, f"hydra.sweep.dir={tmp_path / 's'}")
    stdout, stderr = signal_after(proc, FIRST_EPOCH, signal.SIGINT)
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
        "epochs_completed"] == SWEEP_EPOCHS



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
    assert json.loads((job / "metrics.json").read_text())["epochs_completed"] == SWEEP_EPOCHS
    assert not (job / "error.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_stops_a_joblib_sweep_cleanly(tmp_path, signum):
    """Ctrl-C reaches the main process and the joblib workers: each worker's trainer stops its
    job cleanly (checkpoint written, resume command in its error.txt), the main process waits
    for them instead of killing them, starts no further job, and prints one line."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "s"
    proc = start_in_own_group(tmp_path, "-m", "seed=3,4,5", *SWEEP_ARGS, "hydra/launcher=joblib",
                              "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}")
    wait_for_epoch([sweep / "0", sweep / "1"], proc)  # both workers train, not only the first
    os.killpg(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert_jobs_0_1_stopped_cleanly(proc, stdout, stderr, sweep, signum)
    resume_from_error_txt(tmp_path, sweep / "0")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_stops_a_basic_sweep_cleanly(tmp_path, signum):
    sweep = tmp_path / "s"
    proc = start_in_own_group(tmp_path, "-m", "seed=3,4", *SWEEP_ARGS, f"hydra.sweep.dir={sweep}")
    stdout, stderr = signal_group_after(proc, FIRST_EPOCH, signum)
    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stdout + stderr
    [line] = user_lines(stderr)
    assert line.startswith(f"convtrain: interrupted ({signal.Signals(signum).name}) at epoch ")
    assert not (sweep / "1").exists()
    resume_from_error_txt(tmp_path, sweep / "0")


# --- submitit_local: each job in a controller process, all in the sweep's process group ----
def blocked_signals(status: str) -> set[int]:
    """The signals blocked in a process, from the ``SigBlk:`` line of its /proc status."""
    [mask] = [int(line.split()[1], 16) for line in status.splitlines()
              if line.startswith("SigBlk:")]
    return {signum for signum in range(1, 65) if mask >> (signum - 1) & 1}


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_submitit_controllers_start_deaf_and_the_job_takes_the_signals_back(monkeypatch):
    """A controller starts with SIGINT / SIGTERM blocked (submitit's own policy would end its
    job); this process's mask is left as it was; the job unblocks them, and a signal that came
    meanwhile is delivered then, not lost."""
    local = pytest.importorskip("submitit.local.local")
    from convtrain.app import sweep

    def controller(*args, **kwargs):  # what submitit does: a child with a copy of os.environ
        return subprocess.run(["cat", "/proc/self/status"], env=dict(os.environ),
                              capture_output=True, text=True, check=True).stdout, \
            os.environ.get(sweep.UNBLOCK_ENV)

    monkeypatch.setattr(local, "start_controller", controller)
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    sweep._start_submitit_controllers_deaf()
    try:
        status, unblock = local.start_controller("folder", command="x")
    finally:
        sweep._restore_submitit_controllers()
    assert local.start_controller is controller
    assert {signal.SIGINT, signal.SIGTERM} <= blocked_signals(status)
    assert unblock == "SIGINT,SIGTERM" and sweep.UNBLOCK_ENV not in os.environ
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before

    # in the job's process: blocked at its start, a SIGTERM waits, take_back delivers it
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    try:
        # to this thread: another thread of the test process would take a process's signal
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        assert received == []
        monkeypatch.setenv(sweep.UNBLOCK_ENV, unblock)
        sweep.take_back_stop_signals()
        assert received == [signal.SIGTERM]
        assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
        assert sweep.UNBLOCK_ENV not in os.environ
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
        signal.signal(signal.SIGTERM, previous)


def wait_until(done, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``done()``, while ``proc`` runs (its output shown if it ends first)."""
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)


def wait_for_epoch(jobs: list[Path], proc: subprocess.Popen) -> None:
    """Until every job's log shows its first epoch (submitit jobs log to files, not stdout)."""
    logs = [job / "convtrain.log" for job in jobs]
    wait_until(lambda: all(log.is_file() and FIRST_EPOCH in log.read_text()
                           for log in logs), proc)


def assert_jobs_0_1_stopped_cleanly(proc: subprocess.Popen, stdout: str, stderr: str,
                                    sweep: Path, signum: int) -> None:
    """A sweep stopped by ``signum`` while jobs 0 and 1 ran: its one line and exit status, each
    job's error.txt naming where its ``last`` checkpoint stands, no temp file, job 2 never
    trained, the interruption marker removed."""
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
    assert not (sweep / "2" / "checkpoints").exists() and not (sweep / "2" / "metrics.json").exists()
    assert not (sweep / ".convtrain.interrupted").exists()


def submitit_logs(sweep: Path) -> str:
    """What the jobs' processes wrote to their stderr (submitit's ``*_log.err`` files)."""
    return "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.err"))


SUBMITIT_ARGS = [*SWEEP_ARGS, "hydra/launcher=submitit_local"]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_the_process_group_stops_a_submitit_local_sweep_cleanly(tmp_path, signum):
    """Ctrl-C reaches the main process, the controllers and the jobs: the controllers neither
    kill their job nor relay the signal, each job stops cleanly (resume command in its
    error.txt), the main process waits, starts no further job (the second batch returns at
    once) and prints the joblib sweep's one line; no traceback anywhere. The resume command in
    a job's error.txt keeps the sweep's --config-dir, though the job's process has submitit's
    own command line."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "s"
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "long.yaml").write_text(
        f"# @package _global_\ntrainer:\n  max_epochs: {SWEEP_EPOCHS}\n")
    proc = start_in_own_group(tmp_path, "-m", "--config-dir", "conf", "seed=3,4,5",
                              "+experiment=long", *SUBMITIT_ARGS,
                              "hydra.sweeper.max_batch_size=2", f"hydra.sweep.dir={sweep}")
    wait_for_epoch([sweep / "0", sweep / "1"], proc)
    os.killpg(proc.pid, signum)
    stdout, stderr = proc.communicate(timeout=300)
    assert_jobs_0_1_stopped_cleanly(proc, stdout, stderr, sweep, signum)
    assert "Traceback" not in submitit_logs(sweep)
    assert "interrupted again" not in submitit_logs(sweep)  # one signal each, not two
    for job in (sweep / "0", sweep / "1"):
        error = (job / "error.txt").read_text()
        last = json.loads((job / "checkpoints" / "last.json").read_text())
        assert f"checkpoints/last holds epoch {last['epoch']} (step {last['global_step']})" \
            in error
        assert json.loads((job / "metrics.json").read_text())["epochs_completed"] == last["epoch"]
        assert list(job.rglob("*.tmp*")) == []
    assert f"`convtrain --config-dir {tmp_path / 'conf'} seed=4 +experiment=long " in \
        (sweep / "1" / "error.txt").read_text()
    resume_from_error_txt(tmp_path, sweep / "1")


@pytest.mark.slow
def test_sigterm_to_one_submitit_job_process_stops_it_cleanly(tmp_path):
    """The per-job guarantee of a cluster sweep: `scancel` sends SIGTERM to the job's
    processes. Here SIGTERM goes to job 0's own process (submitit's job process, with
    submitit's handlers installed): convtrain's clean stop wins, the other job goes on, and
    the sweep ends with the stopped job listed as failed with its resume command, exit 1."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "s"
    proc = start_in_own_group(tmp_path, "-m", "seed=3,4", *SUBMITIT_ARGS,
                              f"hydra.sweep.dir={sweep}")
    wait_for_epoch([sweep / "0"], proc)
    job_pid = json.loads((sweep / "0" / ".convtrain.lock").read_text())["pid"]
    assert job_pid != proc.pid
    os.kill(job_pid, signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stdout + stderr + submitit_logs(sweep)
    [line] = user_lines(stderr)
    error = (sweep / "0" / "error.txt").read_text().strip()
    assert error.startswith("interrupted (SIGTERM) at epoch ") and "resume with `" in error
    assert line == (f"convtrain: 1 of 2 jobs failed in {sweep} (details in each job's log): "
                    f"job 0 ({' '.join(['seed=3', *SWEEP_ARGS])}): {error}").replace(
                        "logger.png=false", "logger.png=False"), line
    assert json.loads((sweep / "1" / "metrics.json").read_text())["epochs_completed"] == \
        SWEEP_EPOCHS
    resume_from_error_txt(tmp_path, sweep / "0")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_to_a_slurm_sweeps_main_process_names_the_scancel_command(tmp_path, signum):
    """A submitit_slurm sweep (SLURM's commands faked: sbatch takes the array as job 4242,
    sacct reports it running): Ctrl-C stops only the waiting main process, which says that the
    jobs keep running on the cluster and how to stop them, without a traceback."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in {"sbatch": 'echo "Submitted batch job 4242"',
                       "sacct": 'echo "JobID|State|NodeList"; echo "4242_0|RUNNING|n1"; '
                                'echo "4242_1|RUNNING|n1"',
                       "srun": "exit 0"}.items():
        (fake / name).write_text(f"#!/bin/sh\n{body}\n")
        (fake / name).chmod(0o755)
    sweep = tmp_path / "s"
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    proc = subprocess.Popen([sys.executable, "-m", "convtrain", "-m", "seed=3,4",
                             "hydra/launcher=submitit_slurm", f"hydra.sweep.dir={sweep}"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # both jobs submitted: the main process now waits for them
    wait_until((sweep / ".submitit" / "4242_1" / "4242_1_submitted.pkl").is_file, proc)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum and "Traceback" not in stdout + stderr
    assert user_lines(stderr) == [
        f"convtrain: interrupted ({signal.Signals(signum).name}): stopped waiting for the sweep "
        f"in {sweep}; its jobs keep running on the cluster: `scancel 4242` stops them, each "
        "job then stopping on SLURM's SIGTERM as on Ctrl-C (its error.txt holds its resume "
        "command)"]


WAITING_LAUNCHER = '''
import time
from hydra.plugins.launcher import Launcher

class WaitingLauncher(Launcher):
    """Runs its jobs elsewhere (as Ray does): the main process only waits."""
    def __init__(self, **kwargs): pass
    def setup(self, *, hydra_context, task_function, config): pass
    def launch(self, job_overrides, initial_job_idx):
        print("test: waiting for the jobs", flush=True)
        time.sleep(300)
        return []
'''


@pytest.mark.slow
def test_ctrl_c_while_another_launcher_waits_does_not_claim_a_clean_stop(tmp_path):
    """A launcher convtrain does not know (Ray, as a stand-in a launcher that only waits):
    the line says that the jobs were not stopped cleanly, not 'outside the training loop'."""
    (tmp_path / "hydra_plugins").mkdir()  # a portion of Hydra's namespace package for plugins
    (tmp_path / "hydra_plugins" / "waiting_launcher.py").write_text(WAITING_LAUNCHER)
    sweep = tmp_path / "s"
    proc = start(tmp_path, "-m", "seed=1,2",
                 "hydra.launcher._target_=hydra_plugins.waiting_launcher.WaitingLauncher",
                 f"hydra.sweep.dir={sweep}")
    stdout, stderr = signal_after(proc, "test: waiting for the jobs", signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in stdout + stderr
    assert user_lines(stderr) == [
        f"convtrain: interrupted (SIGINT): stopped waiting for the sweep in {sweep}; its jobs "
        "run under WaitingLauncher, which convtrain does not stop cleanly (they may go on, or "
        "end without a resume command); each job's checkpoints are whole, holding its last "
        "completed epoch: resume a job with its overrides and trainer.resume=DIR "
        "hydra.run.dir=DIR"]
