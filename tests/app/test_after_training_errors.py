"""Issue #12's bad inputs, for every task on a trained run they apply to, through the real
command line (``python -m convtrain`` in a subprocess): each is exit status 2, one line on
stderr naming the file and what was expected, no traceback, and the run's files -- the
checkpoints, its config and log, and the results of earlier tasks -- byte-identical afterwards.

The cases (the task's own ``.hydra/``, log and ``error.txt`` in ``RUN_DIR/<task>/`` are the
record of the refused call, so they are not part of the comparison):

=====================  ======================  ==============================================
case                   tasks                   the input
=====================  ======================  ==============================================
other architecture     eval, predict, export   a checkpoint whose tensors do not fit its config
no checkpoints         eval, predict, export   a run directory without ``checkpoints/``
missing image          predict                 ``predict.inputs=gone.png``
unreadable image       predict                 a PNG cut in half
wrong shape            predict                 a 10x10 grey PNG for the 8x8 model
empty directory        predict                 a directory without files
non-image file         predict                 text in ``notes.png``; ``notes.txt``
=====================  ======================  ==============================================
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from convtrain.training.checkpoint import load_checkpoint, save_checkpoint
from tests.inference import conftest as trained_runs
from tests.inference.conftest import copy_run, run_convtrain

digits_run = trained_runs.digits_run

#: what a refused call may write into RUN_DIR/<task>/: the record of the call itself
CALL_RECORD = {"convtrain.log", "error.txt", "config.yaml", "hydra.yaml", "overrides.yaml"}

#: an earlier task's results in each run, which a refused call must leave alone
EARLIER = {"eval/metrics.json": '{"accuracy": 0.5}\n',
           "predict/predictions.json": '{"header": {}, "predictions": []}\n',
           "export/model.onnx": "earlier export\n"}


@pytest.fixture(scope="module")
def runs(digits_run, tmp_path_factory) -> dict[str, Path]:
    """Private copies of the digits run: ``good``, ``other`` (conv1's tensors for 16 filters in
    a checkpoint whose config says 8) and ``empty`` (no checkpoints/), each with earlier results;
    and ``inputs``, the files to predict on."""
    base = tmp_path_factory.mktemp("bad_inputs")
    good = copy_run(digits_run, base / "good")
    other = copy_run(digits_run, base / "other")
    for name in ("best", "last"):
        ckpt = load_checkpoint(other / "checkpoints" / f"{name}.safetensors")
        config = yaml.safe_load(ckpt.meta["config"])
        config["model"]["layers"]["conv1"]["filters"] = 8
        meta = {k: v for k, v in ckpt.meta.items() if k != "format"}
        save_checkpoint(other / "checkpoints", name, ckpt.model_state, ckpt.optimizer_state,
                        {**meta, "config": yaml.safe_dump(config, sort_keys=False)})
    empty = copy_run(digits_run, base / "empty")
    shutil.rmtree(empty / "checkpoints")
    for run in (good, other, empty):
        for relative, text in EARLIER.items():
            (run / relative).parent.mkdir(exist_ok=True)
            (run / relative).write_text(text)

    inputs = base / "inputs"
    (inputs / "empty_dir").mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(inputs / "cut.png")  # big enough to keep its header
    data = (inputs / "cut.png").read_bytes()
    (inputs / "cut.png").write_bytes(data[:len(data) // 2])
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(inputs / "big.png")
    (inputs / "notes.png").write_text("not an image")
    (inputs / "notes.txt").write_text("not an image")
    return {"good": good, "other": other, "empty": empty, "inputs": inputs}


def fingerprint(run_dir: Path) -> dict[str, str]:
    """Hash of every file of the run but the record of a task call."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name not in CALL_RECORD}


# (case, task, run, predict.inputs or None, what the line must say: {run}/{inputs} filled in)
CASES = [
    ("other architecture", "eval", "other", None,
     "checkpoint '{run}/checkpoints/best.safetensors' does not fit the model of its own config"),
    ("other architecture", "predict", "other", "{inputs}/big.png",
     "checkpoint '{run}/checkpoints/best.safetensors' does not fit the model of its own config"),
    ("other architecture", "export", "other", None,
     "checkpoint '{run}/checkpoints/best.safetensors' does not fit the model of its own config"),
    ("no checkpoints", "eval", "empty", None,
     "trainer.resume: '{run}' holds no best checkpoint (looked for {run}/checkpoints/best"),
    ("no checkpoints", "predict", "empty", "{inputs}/big.png",
     "trainer.resume: '{run}' holds no best checkpoint (looked for {run}/checkpoints/best"),
    ("no checkpoints", "export", "empty", None,
     "trainer.resume: '{run}' holds no best checkpoint (looked for {run}/checkpoints/best"),
    ("missing image", "predict", "good", "{inputs}/gone.png",
     "{inputs}/gone.png: no such file or directory"),
    ("unreadable image", "predict", "good", "{inputs}/cut.png",
     "{inputs}/cut.png: cannot read the image"),
    ("wrong shape", "predict", "good", "{inputs}/big.png",
     "{inputs}/big.png: image of shape (1, 10, 10)"),
    ("empty directory", "predict", "good", "{inputs}/empty_dir",
     "{inputs}/empty_dir"),
    ("non-image file", "predict", "good", "{inputs}/notes.png",
     "{inputs}/notes.png: not a PNG or JPEG image (Pillow cannot identify it)"),
    ("non-image file", "predict", "good", "{inputs}/notes.txt",
     "{inputs}/notes.txt: not a supported input"),
]
#: the second half of each line: what was expected
EXPECTED = {"other architecture": "conv1",
            "no checkpoints": "(looked for ",
            "missing image": "",
            "unreadable image": "",
            "wrong shape": "(1, 8, 8)",
            "empty directory": "PNG, JPEG, .npy, .npz or IDX",
            "non-image file": ""}


#: in the fast suite (each call is a few seconds); the others are slow
FAST = {("no checkpoints", "eval"), ("non-image file", "predict")}


@pytest.mark.parametrize("case, task, run, inputs, message", [
    pytest.param(*c, id=f"{c[1]}-{c[0]}-{Path(c[3] or '').name}".rstrip("-"),
                 marks=() if c[:2] in FAST else pytest.mark.slow) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_the_run_unchanged(runs, tmp_path, case, task, run,
                                                            inputs, message):
    run_dir, folder = runs[run], runs["inputs"]
    before = fingerprint(run_dir)
    args = [f"task={task}", f"trainer.resume={run_dir}"]
    if inputs is not None:
        args.append(f"predict.inputs={inputs.format(inputs=folder)}")
    proc = run_convtrain(tmp_path, *args, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("convtrain: error: "), lines[0]
    assert message.format(run=run_dir, inputs=folder) in lines[0], lines[0]
    assert EXPECTED[case] in lines[0], lines[0]
    assert fingerprint(run_dir) == before
    assert not (tmp_path / "outputs").exists()
