"""``task=predict``: a trained run's top-k classes for the user's own files.

``convtrain task=predict trainer.resume=RUN_DIR predict.inputs='imgs/*.png' [predict.top_k=3]
[predict.resize=true] [checkpoint=last]`` reads the inputs (PNG/JPEG, .npy/.npz, IDX; see
:mod:`convtrain.inference.inputs` for the rules), applies the run's own preprocessing (the
normalisation statistics stored in its checkpoint), prints a table and writes
``RUN_DIR/predict/predictions.csv`` (the rows) and ``predictions.json`` (a ``header``: the
checkpoint relative to RUN_DIR, its epoch, ``inputs``, ``top_k``, ``resize``; and the same
``predictions`` rows).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from convtrain.app import preflight
from convtrain.app.tasks import register_task
from convtrain.errors import ConfigError

log = logging.getLogger("convtrain")

INPUTS_KEY = "predict.inputs"


def check_inputs_setting(value: Any) -> str | list[str]:
    """``predict.inputs``: one path or pattern, or a non-empty list of them."""
    if isinstance(value, (ListConfig, list, tuple)):
        items = OmegaConf.to_container(value) if isinstance(value, ListConfig) else list(value)
        if items and all(item is not None and str(item).strip() for item in items):
            return [str(item) for item in items]
    elif value is not None and str(value).strip():
        return str(value)
    from convtrain.inference.inputs import SUPPORTED  # noqa: PLC0415

    got = "it is not set" if value is None else f"got {value!r}"
    raise ConfigError(f"{INPUTS_KEY}: name the files to predict on, a file, a directory or a "
                      f"glob pattern (or a list of them) of {SUPPORTED} files, e.g. "
                      f"{INPUTS_KEY}='imgs/*.png'; {got}")


@register_task("predict", after_training=True)
def predict(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> None:
    # imported here: every task module loads with the schema, and `convtrain --help` stays fast
    from convtrain.app.tasks._trained import load_trained  # noqa: PLC0415
    from convtrain.inference.inputs import read_inputs  # noqa: PLC0415
    from convtrain.inference.predict import (  # noqa: PLC0415
        check_top_k, format_table, top_k_predictions, write_predictions)

    settings = cfg.predict
    spec = check_inputs_setting(settings.inputs)
    check_top_k(settings.top_k)  # the value now; against the number of classes once loaded
    trained = load_trained(cfg, plan)
    top_k = check_top_k(settings.top_k, len(trained.class_names))
    inputs = read_inputs(spec, input_shape=trained.input_shape,
                         pixel_max=trained.preprocessing.pixel_max, resize=bool(settings.resize))
    log.info("predicting %d input(s) with %s", len(inputs), trained.checkpoint)
    probabilities = trained.predict_proba(inputs.pixels)
    rows = top_k_predictions(probabilities, inputs.names, trained.class_names, top_k)
    print(format_table(rows))
    header = {"checkpoint": trained.checkpoint_in_run, "epoch": trained.epoch, "inputs": spec,
              "top_k": top_k, "resize": bool(settings.resize)}
    csv_path, json_path = write_predictions(rows, run_dir, header)
    print(f"predictions: {csv_path} (and {json_path.name})")
    return None
