"""Run directories are owned: a live run's directory is locked, a finished run is not
overwritten (nor its ``.hydra/``) unless resumed or ``overwrite_run_dir=true``."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convtrain.app.report import collect
from convtrain.app.rundir import LOCK_FILE

FAST = ["trainer.max_epochs=2"]


def convtrain(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def hashes(directory: Path) -> dict[str, str]:
    """Every file under ``directory`` -> sha256 of its bytes."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def finished_run(tmp_path: Path) -> Path:
    proc = convtrain(tmp_path, *FAST, "hydra.run.dir=D")
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "D"


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_failed_command_into_a_finished_run_leaves_it_byte_identical(tmp_path):
    run = finished_run(tmp_path)
    before = hashes(run)
    proc = convtrain(tmp_path, *FAST, "hydra.run.dir=D", "optimizer.lr=-1")
    assert_one_line_error(proc, str(run), "already holds a run", "trainer.resume=",
                          "overwrite_run_dir=true")
    assert hashes(run) == before
    [row] = collect(run.parent)
    assert row["status"] == "ok" and "optimizer.lr" not in row


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_good_command_into_a_finished_run_is_refused_too(tmp_path):
    run = finished_run(tmp_path)
    before = hashes(run)
    assert_one_line_error(convtrain(tmp_path, *FAST, "hydra.run.dir=D"), str(run))
    assert_one_line_error(convtrain(tmp_path, "task=summary", "hydra.run.dir=D"), str(run))
    assert hashes(run) == before
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_resuming_in_place_is_allowed(tmp_path):
    run = finished_run(tmp_path)
    proc = convtrain(tmp_path, "trainer.max_epochs=3", "hydra.run.dir=D", "trainer.resume=D")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 3
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_refused_resume_in_place_keeps_the_runs_config(tmp_path):
    run = finished_run(tmp_path)
    before = hashes(run)
    # the checkpoint already completed 2 epochs: nothing to train, refused by the resume check
    proc = convtrain(tmp_path, "trainer.max_epochs=1", "hydra.run.dir=D", "trainer.resume=D")
    assert_one_line_error(proc, "trainer.max_epochs")
    after = hashes(run)
    log = after.pop("convtrain.log")  # the log keeps the refusal, appended
    assert log != before.pop("convtrain.log")
    assert after == before  # .hydra/ as the finished run wrote it, no error.txt


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_overwrite_run_dir_replaces_the_earlier_run(tmp_path):
    run = finished_run(tmp_path)
    proc = convtrain(tmp_path, "trainer.max_epochs=1", "hydra.run.dir=D", "overwrite_run_dir=true")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 1
    # the earlier run's event files are gone: TensorBoard shows one run (a file for it and
    # one for each split's curves)
    assert len(list((run / "tensorboard").rglob("events.out.tfevents.*"))) == 4


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_second_live_run_is_refused_naming_the_first(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    first = subprocess.Popen([sys.executable, "-m", "convtrain", "trainer.max_epochs=100000",
                              "hydra.run.dir=D"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = tmp_path / "D"
    try:
        deadline = time.time() + 120
        while not (run / "metrics.json").is_file():  # training: .hydra/ is complete
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        hydra_before = hashes(run / ".hydra")
        proc = convtrain(tmp_path, *FAST, "hydra.run.dir=D", "seed=5")
        assert_one_line_error(proc, str(run), "in use by another convtrain run",
                              f"pid {first.pid} on {socket.gethostname()}", "started ")
        assert hashes(run / ".hydra") == hydra_before
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed: its lock is stale, and the next run into the directory takes it over
    assert (run / LOCK_FILE).is_file()
    proc = convtrain(tmp_path, "trainer.max_epochs=1", "hydra.run.dir=D", "overwrite_run_dir=true")
    assert proc.returncode == 0, proc.stderr
    assert not (run / LOCK_FILE).exists()

@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run = tmp_path / "D"
    run.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (run / LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                             "started": "2020-01-01T00:00:00+00:00"}))
    proc = convtrain(tmp_path, *FAST, "hydra.run.dir=D")
    assert proc.returncode == 0, proc.stderr
    assert (run / "metrics.json").is_file()
    assert not (run / LOCK_FILE).exists()


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_the_lock_is_released_when_a_run_fails(tmp_path):
    proc = convtrain(tmp_path, *FAST, "hydra.run.dir=D", "optimizer.lr=-1")
    assert_one_line_error(proc, "optimizer.lr")
    assert not (tmp_path / "D" / LOCK_FILE).exists()
    # nothing was finished there: the directory may be used again
    assert convtrain(tmp_path, *FAST, "hydra.run.dir=D").returncode == 0


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_sweep_into_a_sweep_directory_with_results_is_refused(tmp_path):
    proc = convtrain(tmp_path, "-m", "seed=1,2", "trainer.max_epochs=1", "hydra.sweep.dir=S")
    assert proc.returncode == 0, proc.stderr
    sweep = tmp_path / "S"
    before = hashes(sweep)
    proc = convtrain(tmp_path, "-m", "seed=3,4", "trainer.max_epochs=1", "hydra.sweep.dir=S")
    assert_one_line_error(proc, str(sweep), "already holds runs")
    assert hashes(sweep) == before
    assert not list(sweep.rglob(LOCK_FILE))
    # overwrite_run_dir=true replaces each job's results: one run per job afterwards
    proc = convtrain(tmp_path, "-m", "seed=3,4", "trainer.max_epochs=1", "hydra.sweep.dir=S",
                     "overwrite_run_dir=true")
    assert proc.returncode == 0, proc.stderr
    for job in ("0", "1"):
        assert len(list((sweep / job / "tensorboard").rglob("events.out.tfevents.*"))) == 4
    assert not list(sweep.rglob(LOCK_FILE))


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.Popen([sys.executable, "-m", "convtrain", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)


@pytest.mark.slow
def test_a_run_into_a_live_sweeps_directory_is_refused_before_it_writes(tmp_path):
    # review finding 1: the run took S/1 first, then the sweep's job 1 rewrote its .hydra/
    # and log and failed unseen (sweep exit 0)
    sweep_proc = _start(tmp_path, "-m", "seed=7,8", "trainer.max_epochs=40", "hydra.sweep.dir=S")
    sweep = tmp_path / "S"
    try:
        _wait_for(sweep / "0" / ".hydra" / "overrides.yaml", sweep_proc)
        proc = convtrain(tmp_path, "trainer.max_epochs=1", f"hydra.run.dir={sweep / '1'}")
        assert_one_line_error(proc, f"run directory {sweep / '1'} lies inside {sweep}",
                              f"pid {sweep_proc.pid} on {socket.gethostname()}")
        assert sweep_proc.poll() is None, "the run took longer than the sweep: a weak check"
        out, err = sweep_proc.communicate(timeout=600)
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
            sweep_proc.wait()
    assert sweep_proc.returncode == 0, err
    config = (sweep / "1" / ".hydra" / "config.yaml").read_text()
    assert "seed: 8" in config and "max_epochs: 40" in config
    assert "in use" not in (sweep / "1" / "convtrain.log").read_text()


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_sweep_over_a_live_run_is_refused(tmp_path):
    live = _start(tmp_path, "trainer.max_epochs=100000", "hydra.run.dir=S/1")
    run = tmp_path / "S" / "1"
    try:
        _wait_for(run / "metrics.json", live)
        before = hashes(run / ".hydra")
        proc = convtrain(tmp_path, "-m", "seed=7,8", "trainer.max_epochs=1", "hydra.sweep.dir=S")
        assert_one_line_error(proc, f"sweep directory {tmp_path / 'S'} holds a live run in {run}",
                              f"pid {live.pid}")
        assert hashes(run / ".hydra") == before
        assert not (tmp_path / "S" / "0").exists()
        assert live.poll() is None
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("launcher", [
    [], pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], marks=pytest.mark.slow)])
@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_sweep_job_whose_directory_is_a_live_runs_fails_the_sweep(tmp_path, launcher):
    # job 1's directory S/1 is a link to a live run's directory (a hydra.sweep.subdir outside
    # the sweep directory is refused before any job runs): the job finds the lock taken; in a
    # joblib worker process too, the sweep's main process learns of it and exits 1
    if launcher:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    live = _start(tmp_path, "trainer.max_epochs=100000", "hydra.run.dir=L")
    run = tmp_path / "L"
    try:
        _wait_for(run / "metrics.json", live)
        (tmp_path / "S").mkdir()
        (tmp_path / "S" / "1").symlink_to(run)
        proc = convtrain(tmp_path, "-m", "seed=7,8", "trainer.max_epochs=1", "data.subset=200",
                         "logger.tensorboard=false", "logger.png=false", "hydra.sweep.dir=S",
                         *launcher)
        assert proc.returncode == 1, (proc.stdout, proc.stderr)
        assert "1 of 2 jobs failed" in proc.stderr and "in use" in proc.stderr, proc.stderr
        assert "job 1 (seed=8" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
        assert (tmp_path / "S" / "0" / "metrics.json").is_file()  # the other job ran
        assert not (run / "error.txt").exists()  # nothing written as the other run's failure
        assert "in use" not in (run / "convtrain.log").read_text()
        assert live.poll() is None
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_resume_in_place_that_fails_while_training_keeps_its_failure(tmp_path):
    # review finding 2: the old .hydra/ and error.txt were put back over the new failure
    run = finished_run(tmp_path)
    proc = convtrain(tmp_path, "trainer.max_epochs=3", "optimizer.lr=1000", "hydra.run.dir=D",
                     "trainer.resume=D")
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()  # one line: no NumPy overflow warnings before it
    assert line.startswith("convtrain: error: training diverged"), line
    assert (run / "error.txt").read_text().strip() == line.removeprefix("convtrain: error: ")
    assert "optimizer.lr=1000" in (run / ".hydra" / "overrides.yaml").read_text()
    [row] = collect(run.parent)
    assert row["status"] != "ok"


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_finished_run_without_checkpoints_is_not_offered_a_resume(tmp_path):
    # review finding 6: trainer.resume=DIR cannot work without checkpoints/last
    proc = convtrain(tmp_path, *FAST, "trainer.checkpoint=false", "hydra.run.dir=D")
    assert proc.returncode == 0, proc.stderr
    line = assert_one_line_error(convtrain(tmp_path, *FAST, "hydra.run.dir=D"),
                                 "already holds a run (metrics.json)", "overwrite_run_dir=true")
    assert "trainer.resume" not in line


@pytest.mark.slow
def test_a_refused_sweep_says_how_its_jobs_go_on(tmp_path):
    # review finding 5: re-running a sweep into its directory is refused; the line must say how
    # to go on (each job resumes in place), and that way must work
    proc = convtrain(tmp_path, "-m", "seed=1,2", "trainer.max_epochs=1", "hydra.sweep.dir=S")
    assert proc.returncode == 0, proc.stderr
    job = tmp_path / "S" / "0"
    proc = convtrain(tmp_path, "-m", "seed=1,2", "trainer.max_epochs=2", "hydra.sweep.dir=S")
    assert_one_line_error(proc, "already holds runs", f"trainer.resume={job} hydra.run.dir={job}",
                          "another hydra.sweep.dir", "overwrite_run_dir=true")
    proc = convtrain(tmp_path, "seed=1", "trainer.max_epochs=2", f"trainer.resume={job}",
                     f"hydra.run.dir={job}")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((job / "metrics.json").read_text())["epochs_completed"] == 2
    # without checkpoints there is nothing to resume
    proc = convtrain(tmp_path, "-m", "seed=1", "trainer.max_epochs=1", "trainer.checkpoint=false",
                     "hydra.sweep.dir=T")
    assert proc.returncode == 0, proc.stderr
    line = assert_one_line_error(
        convtrain(tmp_path, "-m", "seed=1", "trainer.max_epochs=1", "hydra.sweep.dir=T"),
        "already holds runs", "overwrite_run_dir=true", "another hydra.sweep.dir")
    assert "trainer.resume" not in line
