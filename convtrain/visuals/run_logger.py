"""The hook that gives a run its TensorBoard event files and pictures.

:class:`VisualLogger` opens ``<run>/tensorboard/<run name>/`` when training starts (and writes
the config and the command line as text), calls every visual of :mod:`convtrain.visuals.hooks`
at each moment of the loop, flushes once per epoch (the epoch's records are readable while
training goes on) and closes the files when training stops, however it stops.

Layout (TensorBoard's run names are these directories, relative to ``--logdir``)::

    <run>/tensorboard/<run name>/         pictures, histograms, optimizer / performance / best
                                          scalars, text, the HParams session
    <run>/tensorboard/<run name>/train/   epoch/loss, epoch/accuracy, step/loss
    <run>/tensorboard/<run name>/val/     epoch/loss, epoch/accuracy  (test/ likewise)

so ``epoch/loss`` is one chart with a curve per split. The run name says what sets the run
apart (the app passes the job's differing overrides, e.g. ``optimizer.lr=0.01``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from convtrain.errors import InternalError
from convtrain.training.hooks import Hook, TrainState
from convtrain.visuals.hook import VISUAL_HOOKS, VisualContext, VisualHook
from convtrain.visuals.hooks.hparams import flatten_config
from convtrain.visuals.settings import parse_logger_settings
from convtrain.visuals.tensorboard import TensorBoardWriter

#: the run name when the caller gives none (the Python API)
DEFAULT_RUN_NAME = "run"


class VisualLogger(Hook):
    """Args:
        logger: the ``logger`` config group (checked here: ConfigError naming the key); None
            = its defaults.
        config_text: the composed config (YAML) for TensorBoard's Text tab (``config``), or
            None.
        hparams: the run's hyperparameters, nested or flat (:func:`flatten_config`); None logs
            ``seed``, ``trainer.max_epochs``, ``trainer.batch_size`` and ``optimizer.lr``.
        run_name: the directory under ``<run>/tensorboard/`` (one path component).
        command: the command line that started the run, for the Text tab (``command``).
        columns: the hyperparameters the HParams table offers (names of ``hparams``), written
            as the experiment record; None: no record (TensorBoard derives the columns from
            all runs under ``--logdir``, every key, the differing ones first).
        differing: those among ``columns`` that set this run apart (a sweep's swept keys, a
            single run's overrides): the table shows them first.

    The run directory (``tensorboard/`` and ``images/`` go there) and
    ``trainer.log_every_n_steps`` come from the loop's state when training starts.
    """

    def __init__(self, logger: Any = None, *, config_text: str | None = None,
                 hparams: Mapping[str, Any] | None = None, run_name: str = DEFAULT_RUN_NAME,
                 command: str | None = None, columns: Sequence[str] | None = None,
                 differing: Collection[str] = ()):
        if not run_name or "/" in run_name or run_name in (".", ".."):
            raise InternalError(f"VisualLogger: run_name must be one path component, got "
                                f"{run_name!r}")
        self.settings = parse_logger_settings(logger)
        self.config_text = config_text
        self.hparams = None if hparams is None else flatten_config(hparams)
        self.run_name = run_name
        self.command = command
        self.columns = None if columns is None else tuple(columns)
        self.differing = frozenset(differing)
        self.writer: TensorBoardWriter | None = None
        self.visuals: list[VisualHook] = []
        self._batch_visuals: list[VisualHook] = []

    def wants_eval_logits(self, state: TrainState) -> set[str]:
        return {split for visual in self.visuals for split in visual.wants_eval_logits(state)}

    def on_fit_start(self, state: TrainState) -> None:
        run_dir = Path(state.run_dir)
        hparams = self.hparams if self.hparams is not None else flatten_config({
            "seed": state.seed, "trainer.max_epochs": state.max_epochs,
            "trainer.batch_size": state.batch_size,
            "optimizer.lr": state.base_lr})
        self.writer = TensorBoardWriter(run_dir / "tensorboard" / self.run_name,
                                        enabled=self.settings.tensorboard)
        if self.config_text:
            self.writer.add_text("config", f"```yaml\n{self.config_text.rstrip()}\n```", 0)
        if self.command:
            self.writer.add_text("command", f"```\n{self.command}\n```", 0)
        # no columns given (the Python API): no experiment record, TensorBoard derives one
        columns = [c for c in self.columns or () if c in hparams]
        context = VisualContext(self.settings, self.writer, run_dir / "images", hparams,
                                state.log_every_n_steps, hparam_columns=columns,
                                differing=self.differing)
        self.visuals = [visual(context) for visual in VISUAL_HOOKS]
        # called after every batch: only the visuals that do something then
        self._batch_visuals = [v for v in self.visuals
                               if type(v).on_train_batch_end is not Hook.on_train_batch_end]
        for visual in self.visuals:
            visual.on_fit_start(state)
        self.writer.flush()

    def on_epoch_start(self, state: TrainState) -> None:
        for visual in self.visuals:
            visual.on_epoch_start(state)

    def on_train_batch_end(self, state: TrainState) -> None:
        for visual in self._batch_visuals:
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
