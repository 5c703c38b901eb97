"""``task=gradcheck``: check the configured model's backward pass against finite differences.

::

    convtrain task=gradcheck [model=NAME] [data=NAME] [gradcheck.samples=2]
                             [gradcheck.inputs=data|random] [gradcheck.eps=1e-6]
                             [gradcheck.threshold=1e-6] [gradcheck.entries_per_tensor=32]
                             [gradcheck.input_noise=1e-3]

builds the model exactly as ``task=train`` would (the same config, layers and seed) but in
float64, takes ``gradcheck.samples`` images and runs :func:`convtrain.nn.gradcheck.check_model`
on them (what is compared, and why the default numbers: that module's docstring). The inputs:

- ``gradcheck.inputs=data`` (default): training images of the configured dataset, drawn with
  the run seed and normalised like training, with their labels;
- ``gradcheck.inputs=random``: standard-normal images of the model's input shape (what
  normalised data looks like) and random labels; needs no data files where the dataset or
  ``model.input_shape`` declares the shape. The output says which inputs were used.

It prints the table (worst relative error per parameter tensor and for the input) and the
verdict, and writes both to the Hydra run directory (``outputs/DATE/TIME/``): ``gradcheck.txt``
(the printed report) and ``gradcheck.json`` (the settings, the inputs and every tensor's row).
Exit status 0 when every tensor is within ``gradcheck.threshold``, 1 when one is not (one line
on stderr naming the failing tensors; no traceback), 2 for a bad setting.

Not a task on a trained run: it checks the model the config describes, with fresh weights
(a ``trainer.resume`` is checked like any run's, but its weights are not used).
"""
from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import DictConfig

from convtrain import validate
from convtrain.app import preflight
from convtrain.app.config_values import section_setting
from convtrain.app.tasks import register_task
from convtrain.errors import CheckFailed, ConfigError
from convtrain.nn.gradcheck import (DEFAULT_ENTRIES_PER_TENSOR, DEFAULT_EPS, DEFAULT_INPUT_NOISE,
                                    DEFAULT_THRESHOLD)

log = logging.getLogger("convtrain")

#: the report files written into the run directory
REPORT_TEXT, REPORT_JSON = "gradcheck.txt", "gradcheck.json"


class GradcheckInputs(enum.Enum):
    data = "data"  # training images of the configured dataset, normalised like training
    random = "random"  # standard-normal images of the input shape: no data files needed


@dataclasses.dataclass
class GradcheckConfig:
    """The ``gradcheck:`` config section (``gradcheck.samples=4``); the check's own defaults
    are :func:`convtrain.nn.gradcheck.check_model`'s."""

    samples: int = 2  # images in the checked batch
    inputs: GradcheckInputs = GradcheckInputs.data
    eps: float = DEFAULT_EPS  # central-difference step
    threshold: float = DEFAULT_THRESHOLD  # worst relative error per tensor that passes
    # entries checked per tensor, drawn at random (smaller tensors whole); null: every entry
    entries_per_tensor: Optional[int] = DEFAULT_ENTRIES_PER_TENSOR
    input_noise: float = DEFAULT_INPUT_NOISE  # std of the noise that breaks exact ties; 0: off


@dataclasses.dataclass(frozen=True)
class CheckInputs:
    """The batch a check runs on: ``x`` ``(N, C, H, W)`` float64, ``labels`` ``(N,)`` and a
    description for the report."""

    x: np.ndarray
    labels: np.ndarray
    description: str


def declared_shape(cfg: DictConfig, plan: preflight.Plan) -> tuple[int, ...] | None:
    """``model.input_shape`` (a model drawn for one size), else the dataset's declared shape."""
    declared = cfg.model.get("input_shape")
    return tuple(int(d) for d in declared) if declared is not None else plan.input_shape


def data_inputs(plan: preflight.Plan, samples: int) -> tuple[CheckInputs, tuple[int, ...]]:
    """``samples`` training images drawn with the run seed, normalised like training."""
    from convtrain.data import load_dataset  # noqa: PLC0415

    data = load_dataset(plan.data, seed=plan.seed)
    if samples > len(data.train):
        raise ConfigError(f"gradcheck.samples: {samples} is more than the {len(data.train)} "
                          f"training images of '{data.name}'")
    picked = np.sort(np.random.default_rng(plan.seed).choice(len(data.train), samples,
                                                             replace=False))
    x = np.asarray(data.train.x[picked], dtype=np.float64)
    labels = np.asarray(data.train.y[picked], dtype=np.int64)
    description = (f"{samples} training images of '{data.name}' (indices "
                   f"{', '.join(map(str, picked.tolist()))}; seed {plan.seed}), normalised")
    return CheckInputs(x, labels, description), tuple(data.input_shape)


def random_inputs(shape: tuple[int, ...], num_classes: int, samples: int,
                  seed: int) -> CheckInputs:
    """Standard-normal images (normalised data has mean 0 and std 1) and uniform labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, *shape))
    labels = rng.integers(0, num_classes, size=samples)
    return CheckInputs(x, labels, f"{samples} random standard-normal inputs of shape "
                                  f"{tuple(shape)} (gradcheck.inputs=random; seed {seed})")


def report_record(report: Any, inputs: CheckInputs, settings: dict[str, Any]) -> dict[str, Any]:
    """``gradcheck.json``: the verdict, the settings, the inputs and one record per tensor
    (NaN, for a tensor whose every checked entry crossed a kink, as null)."""
    def plain(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return list(value) if isinstance(value, tuple) else value

    tensors = [{key: plain(value) for key, value in dataclasses.asdict(t).items()}
               for t in report.tensors]
    return {"model": report.model_name, "passed": report.passed,
            "exit_status": report.exit_status, "verdict": report.verdict(),
            "inputs": inputs.description, "settings": settings, "samples": report.samples,
            "loss": report.loss, "floor": report.floor, "seconds": report.seconds,
            "tensors": tensors}


@register_task("gradcheck")
def gradcheck(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> None:
    """Print and write the report; raise :class:`CheckFailed` (exit 1) when it fails."""
    from convtrain.nn.gradcheck import check_model, check_settings  # noqa: PLC0415
    from convtrain.training.atomic import atomic_write_text  # noqa: PLC0415

    samples = validate.positive_int("gradcheck.samples", section_setting(cfg, "gradcheck", "samples"))
    keys = ("eps", "threshold", "entries_per_tensor", "input_noise")
    # checked before the model is built and the data read (check_model checks them again)
    settings = dict(zip(keys, check_settings(*(section_setting(cfg, "gradcheck", key) for key in keys),
                                             where="gradcheck")))
    source = str(section_setting(cfg, "gradcheck", "inputs"))
    plan64 = dataclasses.replace(plan, dtype=np.dtype(np.float64))
    shape = declared_shape(cfg, plan)
    model = preflight.build(cfg, plan64, shape).model if shape is not None else None
    if source == "data":
        inputs, data_shape = data_inputs(plan, samples)
        if model is None or tuple(model.input_shape) != data_shape:
            model = preflight.build(cfg, plan64, data_shape).model
    else:
        if model is None:  # a dataset without a declared shape: read it to learn the shape
            from convtrain.data import load_dataset  # noqa: PLC0415

            model = preflight.build(cfg, plan64,
                                    tuple(load_dataset(plan.data, seed=plan.seed).input_shape)).model
        inputs = random_inputs(tuple(model.input_shape), int(np.prod(model.output_shape)),
                               samples, plan.seed)
    log.info("gradcheck of %s (float64) on %s", model.name or "the model", inputs.description)
    report = check_model(model, inputs.x, inputs.labels, rng=np.random.default_rng(plan.seed),
                         **settings)
    warning = report.floor_warning()
    if warning:
        log.warning("gradcheck: %s", warning.removeprefix("warning: "))
    text = f"{report}\ninputs: {inputs.description}\n"
    print(text, end="")
    atomic_write_text(run_dir / REPORT_TEXT, text)
    record = report_record(report, inputs, {"samples": samples, "inputs": source, **settings,
                                            "seed": plan.seed})
    atomic_write_text(run_dir / REPORT_JSON, json.dumps(record, indent=2) + "\n")
    print(f"report: {run_dir}/ ({REPORT_TEXT}, {REPORT_JSON})")
    if not report.passed:
        raise CheckFailed(f"{report.verdict()} (report: {run_dir / REPORT_TEXT})")
    return None
