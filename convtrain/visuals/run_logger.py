"""The hook that gives a run its TensorBoard event file and pictures.

:class:`VisualLogger` opens ``<run>/tensorboard`` when training starts (and writes the config
text), calls every visual of :mod:`convtrain.visuals.hooks` at each moment of the loop, flushes
once per epoch (the epoch's records are readable while training goes on) and closes the file
when training stops, however it stops.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from convtrain.errors import InternalError
from convtrain.training.hooks import Hook, TrainState
from convtrain.visuals.hook import VISUAL_HOOKS, VisualContext, VisualHook
from convtrain.visuals.hooks.hparams import flatten_config
from convtrain.visuals.settings import parse_logger_settings
from convtrain.visuals.tensorboard import TensorBoardWriter


class VisualLogger(Hook):
    """Args:
        logger: the ``logger`` config group (checked here: ConfigError naming the key); None
            = its defaults.
        config_text: the composed config (YAML) for TensorBoard's Text tab, or None.
        hparams: the run's hyperparameters, nested or flat (:func:`flatten_config`); None logs
            ``seed``, ``trainer.max_epochs``, ``trainer.batch_size`` and ``optimizer.lr``.

    The run directory (``tensorboard/`` and ``images/`` go there) and
    ``trainer.log_every_n_steps`` come from the loop's state when training starts.
    """

    def __init__(self, logger: Any = None, *, config_text: str | None = None,
                 hparams: Mapping[str, Any] | None = None):
        self.settings = parse_logger_settings(logger)
        self.config_text = config_text
        self.hparams = None if hparams is None else flatten_config(hparams)
        self.writer: TensorBoardWriter | None = None
        self.visuals: list[VisualHook] = []

    def on_fit_start(self, state: TrainState) -> None:
        run_dir = Path(state.run_dir)
        hparams = self.hparams if self.hparams is not None else flatten_config({
            "seed": state.seed, "trainer.max_epochs": state.max_epochs,
            "trainer.batch_size": state.batch_size,
            "optimizer.lr": state.base_lr})
        self.writer = TensorBoardWriter(run_dir / "tensorboard",
                                        enabled=self.settings.tensorboard)
        if self.config_text:
            # indented = a Markdown code block, so TensorBoard keeps the YAML layout
            self.writer.add_text("config", "\n".join(
                "    " + line for line in self.config_text.splitlines()), 0)
        context = VisualContext(self.settings, self.writer, run_dir / "images", hparams,
                                state.log_every_n_steps)
        self.visuals = [visual(context) for visual in VISUAL_HOOKS]
        for visual in self.visuals:
            visual.on_fit_start(state)
        self.writer.flush()

    def on_epoch_start(self, state: TrainState) -> None:
        for visual in self.visuals:
            visual.on_epoch_start(state)

    def on_train_batch_end(self, state: TrainState) -> None:
        for visual in self.visuals:
            visual.on_train_batch_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.writer is None:
            raise InternalError("VisualLogger.on_epoch_end called before on_fit_start")
        for visual in self.visuals:
            visual.on_epoch_end(state)
        self.writer.flush()

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        if self.writer is None:  # stopped before training started
            return
        try:
            for visual in self.visuals:
                visual.on_fit_end(state, error)
        finally:
            self.writer.close()
