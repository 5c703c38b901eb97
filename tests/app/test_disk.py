"""A full disk, a read-only filesystem or missing permissions: one line naming the path and
what failed (exit 2), earlier results kept byte-identical, and the message's claims about the
kept files true.

The faults come from a fault-injecting file layer (the n-th file ``fsync`` of the atomic writes
fails, run in a subprocess) and, where this machine lets the tests mount one, a real tmpfs that
is full or read-only.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RESULTS = ("metrics.json", "checkpoints/last.safetensors", "checkpoints/last.json",
           "checkpoints/best.safetensors", "checkpoints/best.json",
           "initial_kernels.npz")  # the kernel-change views' reference, written at step 0

# Runs convtrain with the n-th fsync of a regular file inside the atomic writes failing with
# the given errno; at that moment it records the hashes of the results already on disk.
INJECT = textwrap.dedent('''
    import errno, hashlib, json, os, stat, sys
    from pathlib import Path
    import convtrain.training.atomic as atomic
    fail_at, code = int(os.environ["FAIL_AT"]), getattr(errno, os.environ["FAIL_ERRNO"])
    run_dir, snapshot = Path(os.environ["RUN_DIR"]), Path(os.environ["SNAPSHOT"])
    results = json.loads(os.environ["RESULTS"])
    calls = [0]

    class FaultyOS:
        def __getattr__(self, name):
            return getattr(os, name)

        def fsync(self, fd):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                calls[0] += 1
                if calls[0] == fail_at:
                    snapshot.write_text(json.dumps({
                        name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
                        for name in results if (run_dir / name).is_file()}))
                    raise OSError(code, os.strerror(code))
            return os.fsync(fd)

    atomic.os = FaultyOS()
    from convtrain.app.cli import main
    sys.argv = ["convtrain", *sys.argv[1:]]
    main()
''')


def inject(tmp_path: Path, fail_at: int, code: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(FAIL_AT=str(fail_at), FAIL_ERRNO=code, RUN_DIR=str(tmp_path / "D"),
               SNAPSHOT=str(tmp_path / "snapshot.json"), RESULTS=json.dumps(RESULTS))
    return subprocess.run([sys.executable, str(script), "hydra.run.dir=D", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)


def convtrain(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "convtrain", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def hashes(run: Path, names=RESULTS) -> dict[str, str]:
    return {name: hashlib.sha256((run / name).read_bytes()).hexdigest()
            for name in names if (run / name).is_file()}


def assert_claims_true(line: str, run: Path) -> None:
    """Each "kept" claim of the message matches the files in the run directory."""
    metrics = run / "metrics.json"
    epochs = json.loads(metrics.read_text())["epochs_completed"] if metrics.is_file() else 0
    last = run / "checkpoints" / "last.json"
    ckpt = json.loads(last.read_text())["epoch"] if last.is_file() else 0
    if epochs:
        assert f"metrics.json of {'epoch 1' if epochs == 1 else f'epochs 1-{epochs}'}" in line
    else:
        assert "metrics.json" not in line.split(";", 1)[1]
    if ckpt:
        assert f"the checkpoint of epoch {ckpt}" in line and f"trainer.resume={run}" in line
    if not epochs and not ckpt:
        assert f"no completed epoch is saved in {run}" in line
    else:
        assert f"kept in {run}" in line


_WRITE_ERRORS = [("ENOSPC", "No space left on device"), ("EROFS", "Read-only file system"),
                 ("EACCES", "Permission denied")]


# each error at each moment (9 subprocess runs of ~1.4 s); the fast suite keeps the diagonal,
# one moment per error, the full suite all nine
@pytest.mark.parametrize("code, reason, fail_at", [
    pytest.param(code, reason, fail_at, marks=() if i == j else pytest.mark.slow)
    for i, (code, reason) in enumerate(_WRITE_ERRORS) for j, fail_at in enumerate([1, 4, 8])])
def test_a_failing_write_mid_training_is_one_line_and_keeps_the_earlier_results(
        tmp_path, fail_at, code, reason):
    proc = inject(tmp_path, fail_at, code, "trainer.max_epochs=4")
    line = one_line(proc)
    run = tmp_path / "D"
    match = re.match(rf"convtrain: error: (cannot write )?({re.escape(str(run))}/\S+): {reason}; ",
                     line)
    assert match, line
    assert match.group(1) or code == "EACCES"
    failed = Path(match.group(2))
    assert failed.name in {Path(name).name for name in RESULTS}
    # the files already written when the write failed are byte-identical, no temp file is left
    assert hashes(run) == json.loads((tmp_path / "snapshot.json").read_text())
    assert not list(run.rglob("*.tmp"))
    assert_claims_true(line, run)
    assert (run / "error.txt").read_text().strip() == line.removeprefix("convtrain: error: ")


@pytest.mark.slow
def test_the_kept_checkpoint_resumes_once_the_disk_has_room(tmp_path):
    one_line(inject(tmp_path, 8, "ENOSPC", "trainer.max_epochs=4"))
    run = tmp_path / "D"
    kept = json.loads((run / "checkpoints" / "last.json").read_text())["epoch"]
    proc = convtrain(tmp_path, "trainer.max_epochs=4", "hydra.run.dir=D", "trainer.resume=D")
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from D/checkpoints/last.safetensors after epoch {kept} " \
        in (run / "convtrain.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["epochs_completed"] == 4


# --- a real filesystem: a small or read-only tmpfs, where mounting is allowed ---

def _can_mount(point: Path) -> bool:
    if shutil.which("mount") is None or os.geteuid() != 0:
        return False
    point.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(point)],
                        capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(point)], check=True)
    return ok


@contextlib.contextmanager
def tmpfs(tmp_path: Path, size: str):
    point = tmp_path / "mnt"
    if not _can_mount(point):
        pytest.skip("cannot mount a tmpfs here (needs root and mount); the injected faults "
                    "above cover the same cases")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                   check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=True)


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_a_real_full_disk_keeps_the_last_good_results(tmp_path):
    # the run's files grow past 420 KiB in its second or third epoch
    with tmpfs(tmp_path, "420k") as mnt:
        proc = convtrain(tmp_path, "trainer.max_epochs=5", f"hydra.run.dir={mnt}/D")
        line = one_line(proc)
        run = mnt / "D"
        assert f"cannot write {run}/" in line and "No space left on device" in line, line
        assert not list(run.rglob("*.tmp"))
        assert_claims_true(line, run)


@pytest.mark.slow  # > 2 s: out of the fast suite
def test_resuming_in_place_on_a_read_only_filesystem_is_one_line(tmp_path):
    with tmpfs(tmp_path, "4m") as mnt:
        assert convtrain(tmp_path, "trainer.max_epochs=1", f"hydra.run.dir={mnt}/D").returncode == 0
        run = mnt / "D"
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        proc = convtrain(tmp_path, "trainer.max_epochs=2", f"hydra.run.dir={run}",
                         f"trainer.resume={run}")
        line = one_line(proc)
        assert f"run directory {run}: cannot write {run}/" in line, line
        assert "Read-only file system" in line
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
        # a new run below the read-only mount, and a sweep there
        line = one_line(convtrain(tmp_path, f"hydra.run.dir={mnt}/E"))
        assert f"cannot write {mnt}/E" in line and "Read-only file system" in line, line
        line = one_line(convtrain(tmp_path, "-m", "seed=1,2", f"hydra.sweep.dir={mnt}/S"))
        assert f"cannot write {mnt}/S" in line and "Read-only file system" in line, line


def test_a_run_directory_without_permission_is_one_line(tmp_path):
    # chmod does not stop root: the lock's open is refused through the injection layer instead
    script = tmp_path / "noperm.py"
    script.write_text(textwrap.dedent('''
        import errno, os, sys
        import convtrain.app.rundir as rundir
        class NoPermission:
            def __getattr__(self, name):
                return getattr(os, name)
            def open(self, path, *args, **kwargs):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        rundir.os = NoPermission()
        from convtrain.app.cli import main
        sys.argv = ["convtrain", *sys.argv[1:]]
        main()
    '''))
    proc = subprocess.run([sys.executable, str(script), "hydra.run.dir=D"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    line = one_line(proc)
    assert line == (f"convtrain: error: run directory {tmp_path / 'D'}: "
                    f"{tmp_path / 'D' / '.convtrain.lock'}: Permission denied")
    assert not (tmp_path / "D" / ".hydra").exists()



def test_an_epoch_0_checkpoint_is_offered_as_a_resume(tmp_path):
    # review finding 9: an interrupt in epoch 1 saves checkpoints/last at epoch 0; a resume in
    # place that then hits a full disk must still say how to go on from it
    from convtrain.app.rundir import describe_os_error

    run = tmp_path / "D"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.json").write_text(json.dumps({"epoch": 0}))
    (run / "checkpoints" / "last.safetensors").write_bytes(b"x")
    exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "metrics.json"))
    line = describe_os_error(exc, run)
    assert line.startswith(f"cannot write {run}/metrics.json: No space left on device; "), line
    assert f"no completed epoch is saved in {run}" in line
    assert f"trainer.resume={run}" in line
    # without the checkpoint there is nothing to resume from
    (run / "checkpoints" / "last.safetensors").unlink()
    assert "trainer.resume" not in describe_os_error(exc, run)
