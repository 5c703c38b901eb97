"""A full disk under the TensorBoard event file and the PNG pictures (issue #13): one line
naming the file and what failed, exit status 2, the earlier epochs' checkpoints and
metrics.json byte-identical, and the message's claims about kept files true.

A fault-injecting file layer runs the real CLI in a subprocess: the n-th write to an event
file (the writer appends its pending records at each flush) or to a ``.png`` file raises
``OSError(ENOSPC)`` without a file name, as a write to a full disk does; at that moment the
layer records the hashes of the results already on disk."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case is a real 3-epoch run in a subprocess (~3 s)

from tests.app.test_disk import RESULTS, assert_claims_true, hashes, one_line

INJECT = textwrap.dedent('''
    import builtins, errno, hashlib, io, json, os, sys
    from pathlib import Path
    target, fail_at = os.environ["TARGET"], int(os.environ["FAIL_AT"])
    run_dir, snapshot = Path(os.environ["RUN_DIR"]), Path(os.environ["SNAPSHOT"])
    calls = [0]

    def disk_full_now():
        calls[0] += 1
        if calls[0] != fail_at:
            return False
        snapshot.write_text(json.dumps({
            name: hashlib.sha256((run_dir / name).read_bytes()).hexdigest()
            for name in json.loads(os.environ["RESULTS"]) if (run_dir / name).is_file()}))
        return True

    def full_disk_error():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no filename, as write() gives

    real_open = builtins.open
    if target == "events":  # every write to an event file counts
        class EventFile:
            def __init__(self, f):
                self._f = f
            def write(self, data):
                if disk_full_now():
                    raise full_disk_error()
                return self._f.write(data)
            def __getattr__(self, name):
                return getattr(self._f, name)

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if "tfevents" in str(file) and set(mode) & set("wxa"):
                return EventFile(f)
            return f
        builtins.open = io.open = fake_open
    else:  # PNG files, however they are opened (Path.write_bytes, open(), Pillow)
        class FullFile:
            def __init__(self, f):
                self._f = f
            def write(self, data):
                raise full_disk_error()
            def __getattr__(self, name):
                return getattr(self._f, name)
            def __enter__(self):
                return self
            def __exit__(self, *exc):
                self._f.close()

        def fake_open(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if str(file).endswith(".png") and "w" in mode and disk_full_now():
                return FullFile(f)
            return f
        builtins.open = io.open = fake_open
    from convtrain.app.cli import main
    sys.argv = ["convtrain", *sys.argv[1:]]
    main()
''')


def inject(tmp_path: Path, target: str, fail_at: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "inject.py"
    script.write_text(INJECT)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(TARGET=target, FAIL_AT=str(fail_at), RUN_DIR=str(tmp_path / "D"),
               SNAPSHOT=str(tmp_path / "snapshot.json"), RESULTS=json.dumps(RESULTS))
    return subprocess.run([sys.executable, str(script), "hydra.run.dir=D", "trainer.max_epochs=3",
                           "trainer.progress=false", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


def check_fault(tmp_path: Path, proc: subprocess.CompletedProcess, failed_file: str) -> str:
    line = one_line(proc)  # exit 2, one stderr line, no traceback
    run = tmp_path / "D"
    match = re.match(rf"convtrain: error: cannot write ({re.escape(str(run))}/\S+): "
                     r"No space left on device; ", line)
    assert match, line
    assert re.fullmatch(failed_file, Path(match.group(1)).relative_to(run).as_posix()), line
    assert hashes(run) == json.loads((tmp_path / "snapshot.json").read_text())
    assert_claims_true(line, run)
    assert (run / "error.txt").read_text().strip() == line.removeprefix("convtrain: error: ")
    return line


# the writer appends its pending records at each flush: 1: the event file's first record
# (written when the writer is created); 2: the config text and step-0 pictures (the flush at
# the start); 10: the run's records of epoch 2 (a 3-epoch run writes 18 times: each file at
# its creation and every epoch end, the run's file once more when it is closed)
@pytest.mark.parametrize("fail_at", [1, 2, 10])
def test_a_full_disk_under_the_event_file(tmp_path, fail_at):
    proc = inject(tmp_path, "events", fail_at)
    # the event file is named (in the run's directory, named by its overrides; a split's
    # curves are in a child run)
    line = check_fault(tmp_path, proc, r"tensorboard/trainer\.max_epochs=3/((train|val|test)/)?"
                                       r"events\.out\.tfevents\.\S+")
    if fail_at == 10:
        # raised by the epoch's flush: epoch 1 (metrics and checkpoint) and epoch 2's
        # checkpoint are kept, as the message says (assert_claims_true)
        assert "and the checkpoint of epoch 2" in line, line


# 1: the first picture (before epoch 1); 7: the last picture of epoch 1, drawn after its
# checkpoint (5 at step 0: kernels and feature maps; then, feature maps every epoch here, the 2
# feature maps of each epoch, the kernels only every 5 epochs)
@pytest.mark.parametrize("fail_at", [1, 7])
def test_a_full_disk_under_the_png_pictures(tmp_path, fail_at):
    proc = inject(tmp_path, "png", fail_at, "logger.feature_maps_every_n_epochs=1")
    line = check_fault(tmp_path, proc, r"images/\w+/\w+\.png")
    if fail_at == 7:
        assert "metrics.json of epoch 1 and the checkpoint of epoch 1 are kept" in line, line
