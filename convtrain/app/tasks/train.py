"""``task=train`` (the default): build the model, load the data, train, report the test accuracy."""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from convtrain.app import preflight, rundir
from convtrain.app.tasks import register_task
from convtrain.training.hooks import Hook

log = logging.getLogger("convtrain")


class _Started(Hook):
    """Tells :mod:`convtrain.app.rundir` that training began (a resume was accepted): a later
    failure no longer puts the run directory's earlier ``.hydra/`` and ``error.txt`` back."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_fit_start(self, state: object) -> None:
        rundir.training_started(self.run_dir)


@register_task("train")
def train(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> float | None:
    """Returns the best value of ``trainer.monitor`` over the epochs (default ``val_accuracy``;
    the training metric when the validation split is empty): what Hydra sweepers such as
    Optuna optimise."""
    parts = (preflight.build(cfg, plan, plan.input_shape)
             if plan.input_shape is not None else None)  # every layer checked before the data

    from convtrain.data import load_dataset  # noqa: PLC0415

    data = load_dataset(plan.data, seed=plan.seed)
    if parts is None or tuple(parts.model.input_shape) != tuple(data.input_shape):
        parts = preflight.build(cfg, plan, tuple(data.input_shape))
    log.info("model:\n%s", parts.model.summary())
    log.info("data: %s train / %s val / %s test images of shape %s, %s classes",
             len(data.train), len(data.val), len(data.test), data.input_shape, data.num_classes)

    from convtrain.training.trainer import Trainer  # noqa: PLC0415
    from convtrain.visuals.run_logger import VisualLogger  # noqa: PLC0415

    from convtrain.app.tensorboard_run import run_identity  # noqa: PLC0415
    from convtrain.visuals.hooks.hparams import flatten_config  # noqa: PLC0415

    config_text = OmegaConf.to_yaml(cfg, resolve=True)  # what load_run rebuilds the model from
    hparams = flatten_config(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    identity = run_identity(hparams)  # run name, command line, HParams columns
    visuals = VisualLogger(OmegaConf.to_container(cfg.logger, resolve=True),
                           config_text=config_text, hparams=hparams,
                           **({} if identity is None else {
                               "run_name": identity.name, "command": identity.command,
                               "columns": identity.columns, "differing": identity.differing}))
    trainer = Trainer(
        parts.model, parts.optimizer, parts.schedule, data,
        run_dir=run_dir, backend=plan.backend, seed=plan.seed, **plan.trainer,
        config_text=config_text, augment=plan.augment, hooks=[_Started(run_dir), visuals],
    )
    metrics = trainer.fit()
    test_acc = metrics.get("test_accuracy")
    print(f"final test accuracy: {test_acc:.4f}" if test_acc is not None else "no test split")
    print(f"run directory: {run_dir}")
    best = trainer.best_monitor_value
    return float(best) if best is not None else None
