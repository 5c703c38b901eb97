"""A clean stop on Ctrl-C (SIGINT) or SIGTERM: the signal is noted, training stops at the next
safe point, and a resume replays the interrupted epoch from its start.

While :meth:`convtrain.training.trainer.Trainer.fit` runs, :class:`InterruptGuard` replaces the
SIGINT and SIGTERM handlers (main thread only; elsewhere signals keep their handlers). The
first signal only sets a flag, so no hook is cut off half-way (a checkpoint, ``metrics.json``
or a PNG being written finishes first). The loop looks at the flag after every training batch,
after the evaluation and before every epoch, and then raises :class:`TrainingInterrupted`; the
hooks' ``on_fit_end`` still run (TensorBoard files closed, progress bar ended). A second signal
ends the process at once (exit ``128 + signal``) with one line, without finishing anything --
except a SIGTERM repeated within 2 s, which launchers relay (the same request twice).

Why the interrupted epoch is replayed rather than continued mid-epoch: ``checkpoints/last``
after epoch k is exactly the state at the start of epoch k+1 (weights, optimizer slots, the
shuffle and dropout rng states, counters, best and totals), and a run resumed from it is bitwise
identical to an uninterrupted one. Continuing mid-epoch would need the epoch's permutation,
the augmentation and dropout draws up to the batch, the running loss/accuracy sums and the
partial timings in the checkpoint too; replaying costs at most one epoch of compute and keeps
one kind of checkpoint. ``metrics.json`` only ever holds completed epochs. When no ``last``
was written yet in this run directory (interrupted during the run's first epoch), the state
from the start of that epoch is written as ``last`` (epoch 0, or the resumed epoch) on the way
out (:class:`convtrain.training.checkpointing.CheckpointHook`).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

#: the signals that stop training cleanly
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class TrainingInterrupted(BaseException):
    """Training stopped on a signal at a safe point.

    A ``BaseException`` like ``KeyboardInterrupt``: code that handles ``Exception`` (a sweep
    recording a failed job and going on) lets it through, so a sweep stops too.

    Attributes:
        signum: the signal (``signal.SIGINT`` or ``signal.SIGTERM``).
        epoch: 1-based epoch in progress when training stopped (the last one started).
        step: training batches done in all epochs when training stopped.
        completed: epochs completed (those in ``metrics.json``).
        max_epochs: ``trainer.max_epochs``.
        run_dir: the run directory.
        checkpointing: whether the run writes checkpoints (``trainer.checkpoint``).
        saved: ``(epoch, global_step)`` held by ``run_dir/checkpoints/last`` once training
            stopped, None when there is none (filled in after the hooks' ``on_fit_end``).
        save_error: why ``last`` could not be written on the way out (``cannot write
            .../last.safetensors: No space left on device``), None when it was not tried or
            was written.
    """

    def __init__(self, signum: int, *, epoch: int, step: int, completed: int, max_epochs: int,
                 run_dir: Path, checkpointing: bool, saved: tuple[int, int] | None = None,
                 save_error: str | None = None):
        super().__init__(signum)
        self.signum, self.epoch, self.step = int(signum), epoch, step
        self.completed, self.max_epochs = completed, max_epochs
        self.run_dir, self.checkpointing, self.saved = Path(run_dir), checkpointing, saved
        self.save_error = save_error

    def __str__(self) -> str:
        return self.message()

    @property
    def exit_status(self) -> int:
        return exit_status(self.signum)

    @property
    def finished(self) -> bool:
        """All ``max_epochs`` were done before the signal was noticed."""
        return self.completed >= self.max_epochs

    @property
    def resumable(self) -> bool:
        return self.saved is not None and not self.finished

    def message(self, command: str | None = None) -> str:
        """The one line for the user. ``command``: the command that resumes the run
        (default: a generic ``convtrain ... trainer.resume=DIR``)."""
        head = f"interrupted ({signal_name(self.signum)}) at epoch {self.epoch}, step {self.step}"
        if self.finished:
            return (f"{head}, after all {self.max_epochs} epochs were done: the run in "
                    f"{self.run_dir} is complete")
        kept = (f"metrics.json holds epoch {self.completed}" if self.completed
                else "no epoch was completed")
        if not self.checkpointing:
            return (f"{head}; {kept}, and with trainer.checkpoint=false there is no checkpoint "
                    f"to resume from in {self.run_dir}")
        if self.saved is None and self.save_error:
            return f"{head}; {kept}, but checkpoints/last could not be written: {self.save_error}"
        if self.saved is None:
            return (f"{head}; {kept}, but no checkpoint could be written to "
                    f"{self.run_dir / 'checkpoints'} (see the log)")
        if command is None:
            command = f"convtrain ... trainer.resume={self.run_dir}"
        epoch, step = self.saved
        return (f"{head}; checkpoints/last holds epoch {epoch} (step {step}), a resume "
                f"continues with epoch {epoch + 1} from its start; resume with `{command}`")


class InterruptGuard:
    """Notes SIGINT/SIGTERM while training runs (see the module docstring).

    Use as a context manager; :attr:`signum` is the first signal received (None before).
    Installed only in the main thread (the only one Python delivers signals to); restores the
    previous handlers on exit. A signal that is ignored (``SIG_IGN``, as SIGINT is for a
    background job started by a non-interactive shell) stays ignored.
    """

    #: a SIGTERM this soon after the first one is the same request, relayed: launchers
    #: (srun, submitit's controller) pass the scheduler's SIGTERM on to the job, which may
    #: then get it twice; only a repeat after this long (or a Ctrl-C) means "stop at once"
    RELAYED_SIGTERM_WINDOW_S = 2.0

    def __init__(self) -> None:
        self.signum: int | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "InterruptGuard":
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                if signal.getsignal(signum) is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def interrupted(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()
            return
        if (signum == self.signum == signal.SIGTERM
                and time.monotonic() - self._first_at < self.RELAYED_SIGTERM_WINDOW_S):
            return
        # the second signal: the user does not want to wait; nothing is finished or closed
        line = (f"interrupted again ({signal_name(signum)}): stopped at once; files already "
                f"written are whole (atomic writes), the TensorBoard log may lack its last "
                f"records\n")
        try:
            os.write(2, line.encode())
        finally:
            os._exit(exit_status(self.signum))
