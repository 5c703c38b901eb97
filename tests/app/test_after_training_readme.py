"""README "After training": the ``convtrain.load_run`` example runs as written (on the session's
digits run, its files made here), and the section names every registered task.

What is checked: the documented calls exist and do what the comments say (rows of
``predict_proba`` sum to 1, ``predict`` is their argmax, the PNGs give the classes of the arrays
they hold, the printed lines are the documented ones).
"""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from convtrain.app.tasks import TASKS
from convtrain.data.digits import read_digits
from tests.inference import conftest as trained_runs

digits_run = trained_runs.digits_run

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLE_RUN = "outputs/2026-12-02/10-00-00-000000"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_the_load_run_example_runs(digits_run, tmp_path, monkeypatch):
    block = re.search(r"### In Python: `convtrain.load_run`.*?```python\n(.*?)```",
                      section("## After training"), re.S).group(1)
    assert EXAMPLE_RUN in block
    monkeypatch.chdir(tmp_path)
    raw = read_digits(None).test.x[:6]
    np.save("digits.npy", raw)
    Path("imgs").mkdir()
    for i, image in enumerate(raw[:3, 0]):  # 0 and 16 only: exact in 8 bits (16 -> 255)
        Image.fromarray(np.where(image >= 8, 255, 0).astype(np.uint8)).save(f"imgs/{i}.png")
    out = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(out):
        exec(compile(block.replace(EXAMPLE_RUN, str(digits_run)), "README.md", "exec"), namespace)
    lines = out.getvalue().splitlines()
    run, classes, proba = namespace["run"], namespace["classes"], namespace["proba"]
    assert lines[0].startswith("TrainedRun(") and "input (1, 8, 8), 10 classes" in lines[0]
    assert proba.shape == (6, 10) and np.allclose(proba.sum(axis=1), 1.0)
    assert classes.dtype == np.int64 and (classes == proba.argmax(axis=1)).all()
    assert lines[1:7] == [f"{run.class_names[k]}: {p[k]:.3f}" for k, p in zip(classes, proba)]
    binary = np.where(raw[:3] >= 8, 16, 0)
    assert lines[7] == str(dict(zip(["0.png", "1.png", "2.png"], run.predict(binary))))


def test_the_section_lists_every_task_on_a_run_and_gradcheck():
    text = section("## After training")
    for name in TASKS.names():
        if name not in ("train", "summary"):
            assert f"convtrain task={name}" in text, name
