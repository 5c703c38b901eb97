"""What the console shows: a progress bar per epoch and one line per epoch.

Per-epoch progress bars (tqdm) switch themselves off where nobody watches:
``progress="auto"`` shows bars only when stderr is a terminal, so log files and CI output get
one concise line per epoch from the logger instead of thousands of carriage-return updates.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from tqdm import tqdm

from convtrain import validate
from convtrain.training.hooks import Hook, TrainState

log = logging.getLogger("convtrain")


def resolve_progress(setting: Any) -> bool:
    """``"auto"`` -> whether stderr is a TTY; ``True``/``False`` (or ``"true"``/``"false"``)
    force bars on/off (parsed by :func:`convtrain.validate.progress`).

    Raises:
        ConfigError: naming ``trainer.progress`` for any other value.
    """
    mode = validate.progress("trainer.progress", setting)
    if mode == "auto":
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return mode


class EpochProgress:
    """A bar over the training batches of one epoch with a live loss/accuracy postfix.

    When disabled every method is a cheap no-op, so the training loop needs no branches.
    """

    def __init__(self, *, enabled: bool, epoch: int, max_epochs: int, total_batches: int):
        self._bar = None
        if enabled:
            width = len(str(max_epochs))
            self._bar = tqdm(total=total_batches, desc=f"epoch {epoch:>{width}}/{max_epochs}",
                             unit="batch", leave=True, dynamic_ncols=True, file=sys.stderr)

    def update(self, loss: float, accuracy: float) -> None:
        """Advance by one batch; ``loss``/``accuracy`` are the epoch's running means."""
        if self._bar is not None:
            # refresh=False: tqdm redraws at most every mininterval, not on every batch
            self._bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.4f}", refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def epoch_line(state: TrainState) -> str:
    """``epoch 3/10  lr 0.1  train loss 0.4123 acc 0.8812  val ...  2.1s 4571 img/s  *best``."""
    m = state.metrics

    def pair(prefix: str) -> str:
        if m[f"{prefix}_loss"] is None:
            return f"{prefix} -"
        return f"{prefix} loss {m[f'{prefix}_loss']:.4f} acc {m[f'{prefix}_accuracy']:.4f}"

    width = len(str(state.max_epochs))
    speed = state.running.count / state.epoch_train_s if state.epoch_train_s > 0 else 0.0
    return (f"epoch {state.epoch + 1:>{width}}/{state.max_epochs}  lr {m['lr']:.3g}  "
            f"{pair('train')}  {pair('val')}  {pair('test')}  "
            f"{state.epoch_time_s:.1f}s {speed:.0f} img/s" + ("  *best" if state.improved else ""))


class ConsoleHook(Hook):
    """The progress bar over each epoch's training batches (when ``enabled``) and the epoch's
    summary line on the ``convtrain`` logger. Goes last, so the line follows the epoch's files."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bar: EpochProgress | None = None
        self._batches_done = 0

    def on_epoch_start(self, state: TrainState) -> None:
        self._bar = EpochProgress(enabled=self.enabled, epoch=state.epoch + 1,
                                  max_epochs=state.max_epochs,
                                  total_batches=state.batches_per_epoch)
        self._batches_done = 0

    def on_train_batch_end(self, state: TrainState) -> None:
        if self._bar is None:
            return
        self._bar.update(state.running.loss, state.running.accuracy)
        self._batches_done += 1
        if self._batches_done == state.batches_per_epoch:
            self._close_bar()  # a finished bar, not one that seems to hang during evaluation

    def on_epoch_end(self, state: TrainState) -> None:
        self._close_bar()
        log.info("%s", epoch_line(state))

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
