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
        logger: the ``logger`` config group (checked here: ConfigError naming the key).
        run_dir: the run directory (``tensorboard/`` and ``images/`` go there).
        config_text: the composed config (YAML) for TensorBoard's Text tab, or None.
        hparams: the run's hyperparameters, nested or flat (:func:`flatten_config`).
        log_every_n_steps: period of ``train/loss_step`` (0 = off).
    """

    def __init__(self, logger: Any, *, run_dir: str | Path, config_text: str | None,
                 hparams: Mapping[str, Any], log_every_n_steps: int):
        self.settings = parse_logger_settings(logger)
        self.run_dir = Path(run_dir)
        self.config_text = config_text
        self.hparams = flatten_config(hparams)
        self.log_every_n_steps = log_every_n_steps
        self.writer: TensorBoardWriter | None = None
        self.visuals: list[VisualHook] = []

    def on_fit_start(self, state: TrainState) -> None:
        self.writer = TensorBoardWriter(self.run_dir / "tensorboard",
                                        enabled=self.settings.tensorboard)
        if self.config_text:
            # indented = a Markdown code block, so TensorBoard keeps the YAML layout
            self.writer.add_text("config", "\n".join(
                "    " + line for line in self.config_text.splitlines()), 0)
        context = VisualContext(self.settings, self.writer, self.run_dir / "images",
                                self.hparams, self.log_every_n_steps)
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
