"""The training loop: epochs of shuffled mini-batches and evaluation; everything else is hooks.

For each epoch the loop sets the learning rate from the schedule, trains on every batch
(forward, loss, backward, optimizer step), evaluates on the validation and test splits, and
hands the epoch's metrics to its hooks (:mod:`convtrain.training.hooks`), which leave the run
directory behind::

    run_dir/
      checkpoints/last + best (.safetensors, .json)   CheckpointHook (training.checkpointing)
      metrics.json                                    MetricsFileHook (training.metrics)
      tensorboard/, images/                           VisualLogger (visuals.run_logger),
                                                      passed in by the app as a hook
    console: progress bar and one line per epoch      ConsoleHook (training.progress)

Reproducibility: batches are shuffled by a NumPy Generator seeded from ``seed``; checkpoints
carry its state and every layer's ``rng`` (dropout), so ``resume=`` a checkpoint of epoch k
reproduces an uninterrupted run bit for bit on the NumPy backend (:mod:`.resume`).

SIGINT / SIGTERM stop the loop after the current batch (:mod:`.interrupts`): ``fit`` raises
``TrainingInterrupted`` and a resume replays the interrupted epoch from its start.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from convtrain import validate
from convtrain.data.augment import check_augment_fits, parse_augment
from convtrain.data.loader import iterate_batches, num_batches
from convtrain.errors import ConfigError
from convtrain.ops.losses import softmax_cross_entropy
from convtrain.training.checkpoint import resolve_checkpoint_path
from convtrain.training.checkpointing import CheckpointHook
from convtrain.training.fit_checks import check_model_fits_data, resolve_drop_last
from convtrain.training.hooks import Best, Hook, TrainState
from convtrain.training.interrupts import InterruptGuard, TrainingInterrupted
from convtrain.training.metrics import MetricsFileHook, RunningAverage, count_correct, evaluate
from convtrain.training.options import MONITORS, TRAINER_DEFAULTS as DEFAULTS, \
    check_trainer_options, resolve_eval_batch_size
from convtrain.training.progress import ConsoleHook, resolve_progress
from convtrain.training.resume import restore

log = logging.getLogger("convtrain")

# Mixed into the seed so the shuffle stream differs from weight init / data split streams
# that other modules derive from the same user seed.
_SHUFFLE_STREAM = 0x5EED5


class TrainingDiverged(ConfigError):
    """The training loss became NaN or infinite (almost always: the learning rate is too high).

    Attributes:
        epoch: 1-based epoch in which it happened.
        step: global step (1-based count of training batches) whose loss was not finite.
        lr: learning rate in effect.
    """

    def __init__(self, message: str, *, epoch: int, step: int, lr: float):
        super().__init__(message)
        self.epoch = epoch
        self.step = step
        self.lr = lr


class Trainer:
    """Trains ``model`` on ``data`` with ``optimizer`` under ``schedule``.

    Args:
        model: the model (``forward``/``backward``/``state_dict``/``load_state_dict``/
            ``output_shape``; optional ``layers`` for rng states, pictures and checks).
        optimizer: a :class:`convtrain.optim.Optimizer` over ``model``.
        schedule: a :class:`convtrain.optim.Schedule`; sets ``optimizer.lr`` every epoch.
        data: ``DataSplits`` (``train``/``val``/``test`` splits, ``num_classes``). ``val`` may
            be empty: then the ``val_*`` monitor falls back to the matching ``train_*`` metric.
        run_dir: the run directory (created if missing).
        backend: the run's Backend; batches are moved onto it by the loader.
        seed: seeds the shuffle order (and is recorded in metrics.json).
        max_epochs, batch_size, eval_batch_size, drop_last, progress, log_every_n_steps,
            checkpoint, monitor, resume: the ``trainer.*`` options, checked and documented in
            :class:`convtrain.training.options.TrainerOptions` (defaults from there too).
        config_text: the composed config (YAML), stored in checkpoints.
        augment: ``data.augment``, checked against the image size and passed to the loader
            for training batches only.
        hooks: further :class:`~convtrain.training.hooks.Hook` objects (the app passes the
            TensorBoard and pictures hook, :class:`convtrain.visuals.run_logger.VisualLogger`),
            called after the built-in ones (checkpoints, metrics.json) and before the console
            line.

    Raises:
        ConfigError: naming ``trainer.<key>`` for bad settings, or the
            layer whose ``units`` must change when the model's output does not match the
            number of classes.
    """

    def __init__(self, model: Any, optimizer: Any, schedule: Any, data: Any, *,
                 run_dir: str | Path, backend: Any, seed: int, max_epochs: int,
                 batch_size: int, eval_batch_size: int | None = DEFAULTS.eval_batch_size,
                 drop_last: bool | None = DEFAULTS.drop_last,
                 progress: bool | str = DEFAULTS.progress,
                 log_every_n_steps: int = DEFAULTS.log_every_n_steps,
                 checkpoint: bool = DEFAULTS.checkpoint,
                 monitor: str = DEFAULTS.monitor.value, resume: str | None = DEFAULTS.resume,
                 config_text: str | None = None, augment: Any = None,
                 hooks: Sequence[Hook] = ()):
        options = check_trainer_options({
            "max_epochs": max_epochs, "batch_size": batch_size,
            "eval_batch_size": eval_batch_size, "progress": progress,
            "log_every_n_steps": log_every_n_steps, "checkpoint": checkpoint,
            "monitor": monitor, "resume": resume, "drop_last": drop_last})
        self.model, self.optimizer, self.schedule, self.data = model, optimizer, schedule, data
        self.run_dir = Path(run_dir)
        self.backend = backend
        self.seed = validate.seed(seed)
        self.max_epochs = options["max_epochs"]
        self.batch_size = options["batch_size"]
        self.eval_batch_size = resolve_eval_batch_size(options)
        self.checkpoint = options["checkpoint"]
        self.resume = options["resume"]
        self.augment = parse_augment(augment, "data.augment")
        check_augment_fits(self.augment, tuple(data.train.x.shape), "data.augment")
        check_model_fits_data(model, data)
        self.drop_last = resolve_drop_last(model, len(data.train), self.batch_size,
                                           options["drop_last"])
        self.requested_monitor = monitor = options["monitor"]
        if monitor.startswith("val_") and len(data.val) == 0:
            # nothing to validate on: "best" is judged on the training metrics instead
            monitor = "train_" + monitor[len("val_"):]
            log.info("validation split is empty: monitoring %s instead of %s", monitor,
                     self.requested_monitor)
        #: the loop's state, shared with every hook
        self.state = TrainState(
            model=model, optimizer=optimizer, schedule=schedule, data=data, backend=backend,
            run_dir=self.run_dir, seed=self.seed, max_epochs=self.max_epochs,
            batch_size=self.batch_size, log_every_n_steps=options["log_every_n_steps"],
            monitor=monitor,
            shuffle_rng=np.random.default_rng([self.seed, _SHUFFLE_STREAM]),
            batches_per_epoch=num_batches(len(data.train), self.batch_size, self.drop_last))
        self._checkpoints = CheckpointHook(config_text) if self.checkpoint else None
        self._guard = InterruptGuard()
        #: called in this order at every moment of the loop
        self.hooks: list[Hook] = [
            *([self._checkpoints] if self._checkpoints is not None else []),
            MetricsFileHook(), *hooks, ConsoleHook(resolve_progress(options["progress"]))]

    @property
    def monitor(self) -> str:
        """The metric actually monitored (``val_*`` falls back to ``train_*`` without val data)."""
        return self.state.monitor

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def best_monitor_value(self) -> float | None:
        """The best value of :attr:`monitor` so far (what a hyperparameter sweep optimises)."""
        return self.state.best.value

    # --- the loop ------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Train from the first (or resumed) epoch to ``max_epochs``.

        Returns:
            the metrics of the last epoch, also written to ``run_dir/metrics.json`` (keys in
            :data:`convtrain.training.metrics.METRIC_KEYS`, plus ``lr``).

        Raises:
            TrainingDiverged: when the training loss becomes NaN/inf (earlier epochs' files
                stay intact).
            TrainingInterrupted: on SIGINT / SIGTERM, after the current batch (or the
                evaluation, or the epoch's hooks) has finished, with ``checkpoints/last``
                holding the state from the start of the interrupted epoch
                (:mod:`convtrain.training.interrupts`).
        """
        state = self.state
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.resume is not None:
            state.start_epoch = restore(state, self.resume)
            state.resumed_from = resolve_checkpoint_path(self.resume)
        session_start = time.perf_counter()
        wall_before = state.totals.wall_time_s
        error = None
        # A loss that overflows is caught and reported in one line (TrainingDiverged); NumPy's
        # overflow/invalid-value warnings on the way there would only bury that line.
        with self._guard, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            try:
                self._call_hooks("on_fit_start")
                for epoch in range(state.start_epoch, self.max_epochs):
                    self._stop_if_interrupted(completed=epoch)
                    state.epoch = epoch
                    epoch_start = time.perf_counter()
                    state.lr = float(self.schedule.lr_at(epoch))
                    self.optimizer.lr = state.lr
                    self._call_hooks("on_epoch_start")
                    self._train_one_epoch(state)
                    wanted = self._eval_logits_wanted(state)
                    val = self._evaluate(self.data.val, "val" if "val" in wanted else None)
                    test = self._evaluate(self.data.test, "test" if "test" in wanted else None)
                    self._stop_if_interrupted(completed=epoch)
                    state.epoch_time_s = time.perf_counter() - epoch_start
                    state.totals.wall_time_s = wall_before + (time.perf_counter() - session_start)
                    self._record_epoch(state, val, test)
                    self._call_hooks("on_epoch_end")
                    state.eval_logits = {}  # read at on_epoch_end only
            except BaseException as exc:  # the hooks learn why training stopped (Ctrl-C too)
                error = exc
                raise
            finally:
                self._end_hooks(error)
                if isinstance(error, TrainingInterrupted):
                    error.saved = self._checkpoints.saved if self._checkpoints else None
                    error.save_error = self._checkpoints.save_error if self._checkpoints \
                        else None
            # a signal while the last epoch's files were written: the run is complete
            self._stop_if_interrupted(completed=self.max_epochs)
        return state.metrics

    def _stop_if_interrupted(self, completed: int) -> None:
        """Raise :class:`TrainingInterrupted` if SIGINT/SIGTERM arrived; ``completed``: the
        epochs whose files are whole."""
        if not self._guard.interrupted:
            return
        state = self.state
        raise TrainingInterrupted(
            self._guard.signum, epoch=state.epoch + 1, step=state.global_step,
            completed=completed, max_epochs=self.max_epochs, run_dir=self.run_dir,
            checkpointing=self._checkpoints is not None,
            saved=self._checkpoints.saved if self._checkpoints else None)

    def _end_hooks(self, error: BaseException | None) -> None:
        """Every hook's ``on_fit_end`` runs (files closed, progress bar ended) even when one
        of them fails. The error that stopped training stays the one raised (a hook's failure
        is logged beside it); after a clean run, the first hook failure is raised."""
        failure = None
        for hook in self.hooks:
            try:
                hook.on_fit_end(self.state, error)
            except Exception as exc:  # noqa: BLE001 - reported below, never swallowed
                if error is None and failure is None:
                    failure = exc
                else:
                    # a disk error is one line (its path and reason say it all); a bug keeps
                    # its traceback
                    log.error("%s could not finish: %s", type(hook).__name__, exc,
                              exc_info=None if isinstance(exc, OSError) else exc)
        if failure is not None:
            raise failure

    def _train_one_epoch(self, state: TrainState) -> None:
        """One pass over the shuffled training split; the mean loss and accuracy over its
        samples end up in ``state.running``, its time in ``state.epoch_train_s``."""
        state.running = RunningAverage()
        self.backend.synchronize()
        start = time.perf_counter()
        for xb, yb in iterate_batches(self.data.train, self.batch_size, shuffle=True,
                                      rng=state.shuffle_rng, backend=self.backend,
                                      drop_last=self.drop_last, augment=self.augment):
            logits = self.model.forward(xb, training=True)
            loss, dlogits = softmax_cross_entropy(logits, yb)
            state.global_step += 1
            if not math.isfinite(loss):
                raise self._diverged(state, loss)
            correct = count_correct(logits, yb)
            # the gradient w.r.t. the images is never used: the first layer skips it
            self.model.backward(dlogits, input_grad=False)
            self.optimizer.step()
            state.running.add(loss, correct, int(yb.shape[0]))
            state.batch_loss = loss
            self._call_hooks("on_train_batch_end")
            self._stop_if_interrupted(completed=state.epoch)
        self.backend.synchronize()
        state.epoch_train_s = time.perf_counter() - start
        state.totals.train_time_s += state.epoch_train_s
        state.totals.train_images += state.running.count

    def _eval_logits_wanted(self, state: TrainState) -> set[str]:
        """The splits whose logits some hook reads at this epoch's end (a hook that is not a
        :class:`Hook` subclass asks for none)."""
        wanted: set[str] = set()
        for hook in self.hooks:
            ask = getattr(hook, "wants_eval_logits", None)
            if ask is not None:
                wanted.update(ask(state))
        return wanted

    def _evaluate(self, split: Any, keep_as: str | None = None) -> tuple[float | None,
                                                                         float | None]:
        """``(mean loss, accuracy)`` over ``split`` in eval mode; ``(None, None)`` if empty.
        ``keep_as``: also keep the logits in ``state.eval_logits[keep_as]``."""
        logits: list | None = None if keep_as is None else []
        result = evaluate(self.model, split, self.eval_batch_size, self.backend,
                          softmax_cross_entropy, iterate_batches, logits_out=logits)
        if logits:
            self.state.eval_logits[keep_as] = np.concatenate(logits)
        return result

    def _record_epoch(self, state: TrainState, val: tuple[float | None, float | None],
                      test: tuple[float | None, float | None]) -> None:
        """The epoch's ``metrics.json`` content, and whether it is the best epoch so far."""
        split_metrics = {"train_loss": state.running.loss,
                         "train_accuracy": state.running.accuracy,
                         "val_loss": val[0], "val_accuracy": val[1],
                         "test_loss": test[0], "test_accuracy": test[1]}
        value = split_metrics[state.monitor]
        state.improved = value is not None and math.isfinite(value) \
            and state.best.improves(value, MONITORS[state.monitor])
        if state.improved:
            state.best = Best(state.epoch + 1, value, val[1], test[1])
        best, totals = state.best, state.totals
        state.metrics = {
            **split_metrics,
            "epochs_completed": state.epoch + 1,
            "wall_time_s": totals.wall_time_s,
            "train_images_per_s": totals.train_images_per_s,
            "best_epoch": best.epoch,
            "best_val_accuracy": best.val_accuracy,
            "best_test_accuracy": best.test_accuracy,
            "monitor": state.monitor,
            "best_monitor_value": best.value,
            "seed": self.seed,
            "backend": self.backend.name,
            "lr": state.lr,
        }

    def _call_hooks(self, moment: str) -> None:
        for hook in self.hooks:
            getattr(hook, moment)(self.state)

    def _diverged(self, state: TrainState, loss: float) -> TrainingDiverged:
        epoch, step = state.epoch, state.global_step
        message = (f"training diverged: the loss became {loss} in epoch {epoch + 1}, step "
                   f"{step} (lr={state.lr:g}). Lower the learning rate, e.g. "
                   f"optimizer.lr={state.base_lr / 10:g}, or add a warm-up "
                   f"(scheduler.warmup_epochs)")
        if epoch > 0:  # name only the files that are there (none yet if resumed elsewhere)
            files = {"checkpoints": self.run_dir / "checkpoints" / "last.safetensors",
                     "metrics.json": self.run_dir / "metrics.json"}
            kept = [name for name, path in files.items()
                    if path.is_file() and (name != "checkpoints" or self.checkpoint)]
            if kept:
                message += (f"; {' and '.join(kept)} of the completed epochs 1-{epoch} are "
                            f"kept in {self.run_dir}")
            elif self.resume is not None:
                message += f"; epochs 1-{epoch} are kept in the resumed checkpoint {self.resume}"
        return TrainingDiverged(message + ".", epoch=epoch + 1, step=step, lr=state.lr)

