"""Per-epoch progress bars (tqdm) that switch themselves off where nobody watches.

``progress="auto"`` shows bars only when stderr is a terminal, so log files and CI output get
one concise line per epoch from the logger instead of thousands of carriage-return updates.
"""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from convtrain import validate


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

    def __enter__(self) -> "EpochProgress":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
