"""``task=inspect``: every visual of a trained run, for one of its checkpoints, without training.

::

    convtrain task=inspect trainer.resume=RUN_DIR [checkpoint=best|last] [logger.KEY=VALUE ...]

writes what training would have logged at that checkpoint's epoch -- the kernel grids, the
feature maps of the fixed samples, the filter responses (activation maximisation, top
patches, saliency and Grad-CAM), and every other visual of :mod:`convtrain.visuals.hooks`
(each through :meth:`~convtrain.visuals.hook.VisualHook.inspect`, so a new visual comes for
free) -- to ``RUN_DIR/inspect/tensorboard/<checkpoint>_epoch<NNN>/`` (a TensorBoard run named
by the checkpoint it shows, beside the training run's ``tensorboard/<run name>/``: ``tensorboard
--logdir RUN_DIR``; with the inspect command line and the trained run's config as text) and
``RUN_DIR/inspect/images/<kind>/<name>_epoch<NNN>.png``. A second inspect replaces the first's
event files and pictures (one event file per run keeps each picture once per step).
Every visual is written whatever its ``*_every_n_epochs`` (the periods only schedule them during
training); ``logger.tensorboard=false`` / ``logger.png=false`` and the visuals' other keys
(``logger.responses_top_k=16``, ...) apply as in training. The step is the checkpoint's epoch.

The data are the run's own (its ``data:`` config and seed, read from the checkpoint, and
``data.KEY=VALUE`` on the command line as in ``task=eval``), preprocessed the checkpoint's way;
only the validation and test splits are read into the model's input units (the views use no
training images).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from convtrain.app import preflight
from convtrain.app.tasks import register_task
from convtrain.app.tasks._trained import load_trained
from convtrain.app.tasks.eval import check_fits, choose_data, command_line_overrides

log = logging.getLogger("convtrain")


@dataclasses.dataclass(frozen=True)
class InspectData:
    """What the visuals read of ``state.data`` (like :class:`~convtrain.data.splits.DataSplits`):
    the splits in the model's input units (``train`` empty), the classes and the shape."""

    train: Any
    val: Any
    test: Any
    num_classes: int
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    name: str


def inspect_data(cfg: DictConfig, plan: preflight.Plan, trained: Any) -> InspectData:
    """The run's validation and test splits (see the module docstring), preprocessed."""
    from convtrain.data.load import load_raw_splits  # noqa: PLC0415
    from convtrain.data.splits import ArraySplit, empty_like  # noqa: PLC0415

    choice = choose_data(cfg, plan, trained, command_line_overrides(cfg))
    raw = load_raw_splits(choice.data, seed=choice.seed)
    check_fits(trained, tuple(raw.train.x.shape[1:]), raw.class_names, raw.name)

    def ready(split: Any) -> Any:
        return ArraySplit(trained.preprocessing.apply(split.x), split.y)

    log.info("inspect: %s (seed %d): %d validation and %d test images; checkpoint %s "
             "(epoch %d)", choice.source, choice.seed, len(raw.val), len(raw.test),
             trained.checkpoint, trained.epoch)
    return InspectData(train=empty_like(raw.train, np.float32), val=ready(raw.val),
                       test=ready(raw.test), num_classes=len(raw.class_names),
                       input_shape=tuple(trained.input_shape), class_names=raw.class_names,
                       name=raw.name)


def replace_earlier_inspect(run_dir: Path, checkpoint: Path) -> None:
    """Remove an earlier inspect's ``tensorboard/`` and ``images/`` from ``run_dir`` (its
    event files would show every picture twice). Nothing is removed when ``run_dir`` holds the
    checkpoint itself (``hydra.run.dir`` pointed at the training run: its own pictures stay).

    Raises:
        RunDirError: a folder that cannot be removed, named.
    """
    from convtrain.app.rundir import RunDirError  # noqa: PLC0415
    from convtrain.training.atomic import os_error_line  # noqa: PLC0415

    if Path(checkpoint).resolve().is_relative_to(Path(run_dir).resolve()):
        return
    for folder in (run_dir / "tensorboard", run_dir / "images"):
        try:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
        except OSError as exc:
            raise RunDirError(f"task=inspect: {os_error_line(exc, 'remove')}") from None


@register_task("inspect", after_training=True)
def inspect(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> None:
    from convtrain.app.tensorboard_run import run_identity  # noqa: PLC0415
    from convtrain.training.hooks import TrainState  # noqa: PLC0415
    from convtrain.visuals.hook import VISUAL_HOOKS, VisualContext  # noqa: PLC0415
    from convtrain.visuals.settings import parse_logger_settings  # noqa: PLC0415
    from convtrain.visuals.tensorboard import TensorBoardWriter  # noqa: PLC0415

    settings = parse_logger_settings(OmegaConf.to_container(cfg.logger, resolve=True))
    trained = load_trained(cfg, plan)
    data = inspect_data(cfg, plan, trained)
    trainer = trained.config.get("trainer") or {}
    step = int(trained.epoch)
    state = TrainState(
        model=trained.model, optimizer=None, schedule=None, data=data,
        backend=trained.model.backend, run_dir=run_dir, seed=int(trained.config.get("seed", 0)),
        max_epochs=step, batch_size=int(trainer.get("batch_size") or 64), log_every_n_steps=0,
        monitor=str(trainer.get("monitor") or "val_accuracy"), shuffle_rng=None,
        start_epoch=step, resumed_from=trained.checkpoint, epoch=step - 1,
        metrics=dict(trained.metrics))
    for layer in trained.model.layers.values():
        # no training batch, no gradients: without this the gradient histograms would show
        # the zeros a loaded model's gradients start as
        layer.grads.clear()
    replace_earlier_inspect(run_dir, trained.checkpoint)
    name = f"{Path(trained.checkpoint).stem}_epoch{step:03d}"
    writer = TensorBoardWriter(run_dir / "tensorboard" / name, enabled=settings.tensorboard)
    identity = run_identity({})  # None outside Hydra (a test calling run() itself)
    if identity is not None:
        writer.add_text("command", f"```\n{identity.command}\n```", 0)
    writer.add_text("config", "```yaml\n" + OmegaConf.to_yaml(
        OmegaConf.create(trained.config)).rstrip() + "\n```", 0)
    context = VisualContext(settings, writer, run_dir / "images", {}, 0)
    try:
        for visual in VISUAL_HOOKS:
            visual(context).inspect(state, step)
    finally:
        writer.close()
    images = sorted((run_dir / "images").rglob("*.png")) if settings.png else []
    kinds = sorted({p.parent.name for p in images})
    print(f"inspect: epoch {step} of {trained.checkpoint}")
    if settings.tensorboard:
        print(f"  TensorBoard: {writer.logdir}  (tensorboard --logdir {trained.run_dir})")
    if images:
        print(f"  {len(images)} PNG files in {run_dir / 'images'}/ ({', '.join(kinds)})")
