"""Loss/accuracy accumulation, split evaluation and the ``metrics.json`` file.

``metrics.json`` is the run's public summary (see DESIGN.md). Every key below is always present;
a metric of an empty split is ``null``. The per-split values are those of the LAST completed
epoch; the ``best_*`` keys describe the epoch where the monitored metric was best.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Mapping

import numpy as np

from convtrain.errors import InternalError
from convtrain.runtime.backend import array_module, to_host
from convtrain.training.atomic import atomic_write_text
from convtrain.training.hooks import Hook, TrainState

#: keys of metrics.json, in the order they are written.
METRIC_KEYS: tuple[str, ...] = (
    "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
    "epochs_completed", "wall_time_s", "train_images_per_s",
    "best_epoch", "best_val_accuracy", "best_test_accuracy", "monitor", "best_monitor_value",
    "seed", "backend",
)


def count_correct(logits: Any, labels: Any) -> int:
    """Number of rows of ``logits`` ``(N, K)`` whose argmax equals ``labels`` ``(N,)``.

    Either may be a host or a device array: labels are moved to the logits' backend first
    (CuPy refuses to compare a device array with a host one).
    """
    xp = array_module(logits)
    labels = xp.asarray(to_host(labels)) if xp is np else xp.asarray(labels)
    return int(xp.count_nonzero(logits.argmax(axis=1) == labels))


@dataclasses.dataclass
class RunningAverage:
    """Sample-weighted mean loss and accuracy over the batches of one pass."""

    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0

    def add(self, batch_mean_loss: float, correct: int, n: int) -> None:
        """Add a batch of ``n`` samples with mean loss ``batch_mean_loss``."""
        self.loss_sum += batch_mean_loss * n
        self.correct += correct
        self.count += n

    @property
    def loss(self) -> float | None:
        return self.loss_sum / self.count if self.count else None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.count else None


def evaluate(model: Any, split: Any, batch_size: int, backend: Any,
             loss_fn: Callable[[Any, Any], tuple[float, Any]],
             batches: Callable[..., Any],
             logits_out: list | None = None) -> tuple[float | None, float | None]:
    """Mean loss and accuracy of ``model`` in eval mode over ``split`` (``(None, None)`` if empty).

    ``batches`` is the loader's ``iterate_batches``; ``loss_fn`` returns ``(mean_loss, dlogits)``.
    ``logits_out``: when given, each batch's logits are appended to it as a host copy
    ``(batch, K)`` (the visuals read them instead of a forward pass of their own).
    """
    if len(split) == 0:
        return None, None
    avg = RunningAverage()
    for xb, yb in batches(split, batch_size, shuffle=False, rng=None, backend=backend):
        logits = model.forward(xb, training=False)
        loss, _ = loss_fn(logits, yb)
        avg.add(loss, count_correct(logits, yb), int(yb.shape[0]))
        if logits_out is not None:
            host = to_host(logits)  # a device array's is a copy already
            # a host array's is the layer's: the next batch may reuse its buffer
            logits_out.append(host.copy() if host is logits else host)
    return avg.loss, avg.accuracy


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by None (strict JSON has no NaN/Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, Any]) -> None:
    """Atomically write ``metrics`` as ``metrics.json`` (keys of METRIC_KEYS first)."""
    missing = [k for k in METRIC_KEYS if k not in metrics]
    if missing:
        raise InternalError(f"metrics.json is missing keys {missing}")
    ordered = {k: metrics[k] for k in METRIC_KEYS}
    ordered.update({k: v for k, v in metrics.items() if k not in ordered})
    atomic_write_text(path, json.dumps(json_safe(ordered), indent=2, allow_nan=False) + "\n")



class MetricsFileHook(Hook):
    """Rewrites ``<run>/metrics.json`` (atomically) with each completed epoch's metrics."""

    def on_epoch_end(self, state: TrainState) -> None:
        write_metrics(state.run_dir / "metrics.json", state.metrics)
