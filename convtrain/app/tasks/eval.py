"""``task=eval``: score a trained run on a labelled split and write the results beside it.

::

    convtrain task=eval trainer.resume=RUN_DIR [checkpoint=best|last] [eval.split=test|val|train]
                        [data=NAME] [data.KEY=VALUE ...] [eval.batch_size=N]

prints the loss, the accuracy, a per-class table (precision, recall = per-class accuracy, f1)
and the confusion matrix, and writes ``RUN_DIR/eval/{metrics.json, per_class.csv,
confusion_matrix.csv, confusion_matrix.png}`` (definitions: :mod:`convtrain.inference.evaluate`).
A second eval replaces them; the run's own files are only read.

Which data (what you do not set on the command line comes from the run):

- by default the run's own ``data:`` config and seed, read from its checkpoint, so ``val`` is
  exactly the run's validation split and ``test`` its test split;
- ``data.KEY=VALUE`` on the command line changes that key of the run's data config (``data.root``
  where the files moved, ``data.subset``, ``data.val_fraction``, ...); ``seed=N`` the seed that
  draws the subset and the validation split;
- ``data=NAME`` evaluates on another dataset: its shipped config (``configs/data/NAME.yaml``)
  with the ``data.KEY=VALUE`` overrides on top, nothing from the run's data config.

The images are always preprocessed the checkpoint's way (its pixel scale and training
normalisation statistics), never with statistics of the evaluated data. A dataset whose images
have another shape than the model's input, or another number of classes, is refused in one line.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from omegaconf import DictConfig

from convtrain import validate
from convtrain.app import preflight
from convtrain.app.config_values import section_setting
from convtrain.app.tasks import register_task
from convtrain.app.tasks._trained import choose_data, command_line_overrides, load_trained
from convtrain.errors import ConfigError

if TYPE_CHECKING:  # loaded when the task runs (the rule: convtrain/app/tasks/__init__.py)
    from convtrain.inference import TrainedRun

log = logging.getLogger("convtrain")


class Split(enum.Enum):
    test = "test"
    val = "val"
    train = "train"


@dataclasses.dataclass
class EvalConfig:
    """The ``eval:`` config section (``eval.split=val``)."""

    split: Split = Split.test  # the split of the data to score: test | val | train
    # images per forward pass; null: the run's trainer.eval_batch_size (its default,
    # 4 x batch_size), which reproduces the trainer's own evaluation exactly
    batch_size: Optional[int] = None


def batch_size(cfg: DictConfig, trained: TrainedRun) -> int:
    """``eval.batch_size``, else the run's ``trainer.eval_batch_size`` (default 4 x batch size)."""
    value = cfg.eval.batch_size
    if value is not None:
        return validate.positive_int("eval.batch_size", value)
    from convtrain.training.options import resolve_eval_batch_size  # noqa: PLC0415

    return resolve_eval_batch_size(trained.config.get("trainer") or {})


def check_fits(trained: TrainedRun, shape: tuple[int, ...], class_names: tuple[str, ...],
               dataset: str) -> None:
    """One line when ``dataset``'s images or classes do not fit the model; a warning when
    the class names differ (the classes are then matched by index)."""
    model = f"the model of '{trained.checkpoint}'"
    if tuple(shape) != tuple(trained.input_shape):
        raise ConfigError(f"data: dataset '{dataset}' has images of shape {tuple(shape)} but "
                          f"{model} takes {tuple(trained.input_shape)}; evaluate it on data of "
                          f"that shape (data=NAME)")
    if len(class_names) != len(trained.class_names):
        raise ConfigError(f"data: dataset '{dataset}' has {len(class_names)} classes but "
                          f"{model} has {len(trained.class_names)}; evaluate it on data with "
                          f"the same classes")
    if tuple(class_names) != tuple(trained.class_names):
        log.warning("data: dataset '%s' names its classes %s but the model was trained on %s; "
                    "classes are matched by index", dataset, ", ".join(class_names[:4]) + ", ...",
                    ", ".join(trained.class_names[:4]) + ", ...")


@register_task("eval", after_training=True)
def run(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> float:
    """Returns the accuracy (what a sweep over runs or checkpoints would compare)."""
    from convtrain.data.load import load_raw_splits  # noqa: PLC0415
    from convtrain.inference.evaluate import evaluate, write_results  # noqa: PLC0415

    split = str(section_setting(cfg, "eval", "split"))
    trained = load_trained(cfg, plan)
    images_per_pass = batch_size(cfg, trained)  # checked before the data is read
    choice = choose_data(cfg, plan, trained, command_line_overrides(cfg))
    raw = load_raw_splits(choice.data, seed=choice.seed)
    check_fits(trained, tuple(raw.train.x.shape[1:]), raw.class_names, raw.name)
    images = raw.split(split)
    if len(images) == 0:
        raise ConfigError(
            f"eval.split={split}: the {split} split of '{raw.name}' is empty (data.val_fraction="
            f"{choice.data.get('val_fraction', 0)}: {choice.source}); evaluate "
            f"eval.split=test, or hold out images with data.val_fraction=F (0 < F < 1)")
    log.info("eval: %s (seed %d): %s split, %d images; checkpoint %s", choice.source,
             choice.seed, split, len(images), trained.checkpoint)
    data_record = {k: v for k, v in choice.data.items() if k != "augment"}
    evaluation = evaluate(trained, images.x, images.y, split=split, dataset=raw.name,
                          batch_size=images_per_pass,
                          details={"data": data_record, "seed": choice.seed,
                                   "preprocessing": trained.preprocessing.as_dict()})
    write_results(evaluation, run_dir)
    print(evaluation.report())
    print(f"results: {run_dir}/ (metrics.json, per_class.csv, confusion_matrix.csv, "
          f"confusion_matrix.png)")
    return evaluation.accuracy
