"""How the task modules are wired: their import rule (convtrain/app/tasks/__init__.py: every task
module loads with the schema, so none loads the after-training machinery at import time), and
their config sections declared once (the schema, not configs/train.yaml)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_loading_the_command_and_its_tasks_loads_no_inference_or_model():
    repo = str(Path(__file__).resolve().parents[2])
    code = ("import sys, convtrain.app.cli, convtrain.app.tasks\n"
            "print(sorted(m for m in sys.modules if m.startswith(('convtrain.inference', "
            "'convtrain.nn.model', 'convtrain.export.onnx'))))")
    env = dict(os.environ, PYTHONPATH=repo)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_task_sections_are_declared_once_in_the_schema():
    """configs/train.yaml names the after-training sections' keys in comments and points to the
    declarations; it restates none of their defaults (each default lives once)."""
    import yaml

    from convtrain.app.cli import config_dir
    shipped = yaml.safe_load((Path(config_dir()) / "train.yaml").read_text())
    assert not {"predict", "export", "gradcheck", "eval"} & set(shipped)
