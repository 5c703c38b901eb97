"""What the training loop tells the rest of the run: the :class:`Hook` protocol and its state.

The loop (:mod:`convtrain.training.trainer`) only trains and evaluates. Everything else a run
does -- the console line, checkpoints, ``metrics.json``, TensorBoard scalars and pictures -- is a
hook: an object whose methods the loop calls at five moments, always with the same
:class:`TrainState`::

    on_fit_start(state)                 after a resume, before the first epoch
      on_epoch_start(state)             lr set, before the first batch of the epoch
        on_train_batch_end(state)       after each optimizer step (state.batch_loss, .running)
      on_epoch_end(state)               after evaluation; state.metrics holds the epoch's
    on_fit_end(state, error)            always, also when training stops with ``error``

Hooks run in list order at every moment. A hook reads the state and must not change what the
loop computes with (weights, rng states, counters): logging never changes a run's results.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Collection


@dataclasses.dataclass
class Best:
    """The epoch where the monitored metric was best so far (all None before the first)."""

    epoch: int | None = None
    value: float | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None

    def improves(self, value: float, mode: str) -> bool:
        if self.value is None:
            return True
        return value > self.value if mode == "max" else value < self.value


@dataclasses.dataclass
class Totals:
    """Time and work accumulated over all epochs, including those before a resume."""

    wall_time_s: float = 0.0
    train_time_s: float = 0.0
    train_images: int = 0

    @property
    def train_images_per_s(self) -> float | None:
        return self.train_images / self.train_time_s if self.train_time_s > 0 else None


@dataclasses.dataclass
class TrainState:
    """Everything a hook may read. The loop owns it; hooks treat it as read-only, except
    :func:`convtrain.training.resume.restore`, which fills it from a checkpoint."""

    model: Any
    optimizer: Any
    schedule: Any
    data: Any
    backend: Any
    run_dir: Path
    seed: int
    max_epochs: int
    batch_size: int
    log_every_n_steps: int  # trainer.log_every_n_steps: period of per-batch records (0 = off)
    monitor: str  # the metric actually monitored (val_* falls back to train_* without val data)
    shuffle_rng: Any  # NumPy Generator of the batch order; checkpoints carry its state
    start_epoch: int = 0  # epochs completed before this fit() (> 0 after a resume)
    resumed_from: Path | None = None  # the checkpoint file trainer.resume named, if any
    epoch: int = 0  # 0-based epoch in progress (its step in TensorBoard is epoch + 1)
    global_step: int = 0  # training batches done, over all epochs
    lr: float = 0.0  # the epoch's learning rate
    batches_per_epoch: int = 0
    batch_loss: float = 0.0  # loss of the latest training batch
    running: Any = None  # the epoch's RunningAverage of loss and accuracy so far
    epoch_time_s: float = 0.0  # the epoch's training + evaluation time
    epoch_train_s: float = 0.0  # the epoch's time in the training batches
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)  # metrics.json content
    # the epoch's eval-mode logits by split ("val", "test"), host (N, K) in the split's order,
    # during on_epoch_end, for the splits a hook asked for (Hook.wants_eval_logits); else empty
    eval_logits: dict[str, Any] = dataclasses.field(default_factory=dict)
    improved: bool = False  # the epoch just ended is the new best
    best: Best = dataclasses.field(default_factory=Best)
    totals: Totals = dataclasses.field(default_factory=Totals)

    @property
    def base_lr(self) -> float:
        """The configured lr (the schedule's base): what the user can change."""
        return float(getattr(self.schedule, "base_lr", self.optimizer.lr))

    @property
    def step(self) -> int:
        """The epoch's step on TensorBoard's x axis: epochs completed (0 = before training)."""
        return self.epoch + 1


class Hook:
    """Base of every hook: each moment does nothing unless a subclass overrides it."""

    def wants_eval_logits(self, state: TrainState) -> Collection[str]:
        """The splits (``"val"``, ``"test"``) whose eval-mode logits this hook reads in
        ``state.eval_logits`` at this epoch's ``on_epoch_end`` (asked before the epoch's
        evaluation, ``state.epoch`` set): the loop keeps only those, only for that moment."""
        return ()

    def on_fit_start(self, state: TrainState) -> None:
        pass

    def on_epoch_start(self, state: TrainState) -> None:
        pass

    def on_train_batch_end(self, state: TrainState) -> None:
        pass

    def on_epoch_end(self, state: TrainState) -> None:
        pass

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        pass
