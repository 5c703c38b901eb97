"""``task=export``: a trained run's model as a file that runs without convtrain.

    convtrain task=export trainer.resume=RUN_DIR                     -> RUN_DIR/export/model.onnx
    convtrain task=export trainer.resume=RUN_DIR export.format=torch -> RUN_DIR/export/model.py
                                                                       + model.safetensors

Both take raw pixels as the run's dataset stores them (float32 ``(N, C, H, W)``, 0..255; 0..16
for digits) and return logits: the training preprocessing is their first step. Before anything
is written the export is run (onnxruntime, or PyTorch for the torch format) on
``export.verify_samples`` test images of the run's dataset (the data ``task=eval`` reads:
the run's data config with the command line's ``data`` overrides) and compared with convtrain's own
forward pass; the max abs logit difference is printed, and above ``export.tolerance`` (times the
largest |logit| when that is above 1: float32 rounding grows with the logits, see
:func:`convtrain.export.settings.allowed_difference`) the task fails with one line (exit 2). ``RUN_DIR/export/export.json`` records, per format, what was
written, from which checkpoint, the preprocessing, the class names and the check. ``checkpoint=last`` exports the last epoch instead of the best.
The keys are declared in :mod:`convtrain.export.settings`.

The torch format is checked only where torch is installed (writing it needs no torch); the ONNX
format needs the ``export`` extra (``pip install "convtrain[export]"``; in a checkout
``pip install -e ".[export]"``).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig

from convtrain import validate
from convtrain.app import preflight
from convtrain.app.tasks import register_task
from convtrain.app.config_values import section_setting
from convtrain.app.tasks._trained import choose_data, command_line_overrides, load_trained
from convtrain.errors import ConfigError, DataError

if TYPE_CHECKING:  # loaded when the task runs (the rule: convtrain/app/tasks/__init__.py)
    from convtrain.inference import TrainedRun

#: what ``export.json`` is called (beside the exported files).
RECORD_FILE = "export.json"


def verification_images(cfg: DictConfig, plan: preflight.Plan, trained: TrainedRun,
                        count: int) -> np.ndarray | None:
    """The first ``count`` test images (train images where the test split is empty) of the
    data ``task=eval`` would read (:func:`~convtrain.app.tasks._trained.choose_data`: the run's
    data config and seed, the command line's ``data`` overrides on top), raw float32
    ``(n, C, H, W)`` exactly as the files store them; None for ``count`` 0.

    Raises:
        DataError: the dataset's files are missing or damaged (its reader's line, and how to
            export without the check).
        ConfigError: the dataset's images do not have the model's input shape.
    """
    if count == 0:
        return None
    from convtrain.data.load import load_raw_splits  # noqa: PLC0415

    choice = choose_data(cfg, plan, trained, command_line_overrides(cfg))
    try:
        raw = load_raw_splits(choice.data, seed=choice.seed)
    except DataError as exc:
        raise DataError(f"{exc} (the export is checked on the run's test images; "
                        f"export.verify_samples=0 exports without the check)") from None
    split = raw.test if len(raw.test) else raw.train
    images = split.x[:count]
    if tuple(images.shape[1:]) != tuple(trained.input_shape):
        raise ConfigError(f"export: the images of dataset '{raw.name}' ({choice.source}) have "
                          f"shape {tuple(images.shape[1:])} but the model of "
                          f"{trained.checkpoint} takes {tuple(trained.input_shape)}")
    return images.astype(np.float32)


def _torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


@register_task("export", after_training=True)
def export(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> None:
    """Write the export into ``run_dir`` (``RUN_DIR/export``), check it, print the figure."""
    export_format = str(section_setting(cfg, "export", "format"))
    samples = validate.non_negative_int("export.verify_samples", section_setting(cfg, "export", "verify_samples"),
                                        zero_means="no check")
    tolerance = validate.real("export.tolerance", section_setting(cfg, "export", "tolerance"), low=0.0)
    if export_format == "onnx":
        from convtrain.export.onnx import check_opset  # noqa: PLC0415 - loads onnx

        opset = check_opset(section_setting(cfg, "export", "opset"))  # before the checkpoint is read

    trained = load_trained(cfg, plan)
    images = verification_images(cfg, plan, trained, samples)
    record: dict[str, Any] = {"format": export_format, "checkpoint": trained.checkpoint_in_run,
                              "epoch": trained.epoch, "input_shape": list(trained.input_shape),
                              "class_names": list(trained.class_names),
                              "preprocessing": trained.preprocessing.as_dict()}
    if export_format == "onnx":
        from convtrain.export.onnx import export_onnx  # noqa: PLC0415

        path = run_dir / "model.onnx"
        check = export_onnx(trained.model, path, preprocessing=trained.preprocessing,
                            opset=opset, verify_batch=images, tolerance=tolerance,
                            class_names=trained.class_names)
        files = [path]
        record["opset"] = opset
        print(f"ONNX model (opset {opset}) written to {path}")
    else:
        from convtrain.export.torch_code import write_torch_export  # noqa: PLC0415

        checked = images is not None and _torch_installed()
        written = write_torch_export(trained.model, run_dir, preprocessing=trained.preprocessing,
                                     verify_batch=images if checked else None,
                                     tolerance=tolerance)
        check, files = written.check, [written.source, written.weights]
        record["class"] = written.class_name
        print(f"PyTorch module {written.class_name} written to {written.source} (weights: "
              f"{written.weights})")
    record["files"] = [file.name for file in files]
    if check is not None:
        record["check"] = check.as_dict()
        print(check.summary("test images"))
    elif images is None:
        print("not checked (export.verify_samples=0)")
    else:
        print("not checked: torch is not installed here (pip install torch)")
    write_record(run_dir / RECORD_FILE, export_format, record)
    return None


def write_record(path: Path, export_format: str, record: dict[str, Any]) -> None:
    """Put ``record`` under ``export_format`` in the JSON file ``path``, keeping the other
    format's entry (both formats may live side by side in ``RUN_DIR/export``); an unreadable
    old file is replaced."""
    from convtrain.training.atomic import atomic_write_text  # noqa: PLC0415

    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        records = {}
    if not isinstance(records, dict):
        records = {}
    records[export_format] = record
    atomic_write_text(path, json.dumps(records, indent=2) + "\n")
