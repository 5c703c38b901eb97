"""The HParams dashboard: one row per run (per job of a sweep).

When training starts: an experiment record (which hyperparameters are columns, which metrics,
in which order -- TensorBoard shows the first 5 of each) and the session's values (the whole
flattened config); when it ends, the session's status (``success``, or ``failure`` when an
error or Ctrl-C stops training). The metric values are the last points of the run's scalars
(:mod:`convtrain.visuals.hooks.scalars`); the metrics come in the order of
:func:`metric_columns`: the best value of ``trainer.monitor`` and the monitored metric's last
value first, then the best epoch and the accuracies at it, then the rest.
"""
from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from convtrain import validate
from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import Option, VisualContext, VisualHook
from convtrain.visuals.hooks.scalars import EPOCH_TAGS, best_tags

if TYPE_CHECKING:
    from convtrain.visuals.tensorboard import HParamValue, Metric


def metric_columns(monitor: str) -> list[Metric]:
    """The HParams metrics for ``trainer.monitor = monitor`` (e.g. ``val_accuracy``), in the
    dashboard's order (it shows the first 5): ``monitor/best_<monitor>``, the monitored
    metric's last value, ``monitor/best_epoch``, the other ``monitor/*`` values, the other splits' last loss and
    accuracy, then lr and speed."""
    from convtrain.visuals.tensorboard import Metric  # noqa: PLC0415 (TensorBoard: lazily)

    split, name = monitor.split("_", 1)
    best = [Metric("", tag, tag.split("/")[1]) for tag in best_tags(monitor)]
    epoch = [Metric(s, tag, f"{s}_{tag.split('/')[1]}") for s in ("val", "test", "train")
             for tag in sorted(EPOCH_TAGS) if (s, tag) != (split, f"epoch/{name}")]
    return ([best[0], Metric(split, f"epoch/{name}", monitor), *best[1:], *epoch]
            + [Metric("", tag, tag.split("/")[1]) for tag in
               ("performance/epoch_time_s", "performance/images_per_s", "optimizer/lr")])


def flatten_config(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, HParamValue]:
    """Nested config -> ``{"model.layers.conv1.filters": 16, "optimizer.lr": 0.1, ...}``.

    Values kept as they are: bool, int, float, str (NumPy scalars become Python scalars).
    Lists and tuples become JSON text (``"[3, 3]"``), enums their name, other objects
    ``str(obj)``. ``None`` and empty mappings are left out (a HParams cell cannot be null).
    """
    flat: dict[str, HParamValue] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=name + "."))
        elif value is None:
            continue
        elif isinstance(value, (bool, np.bool_)):
            flat[name] = bool(value)
        elif isinstance(value, (int, float, str, np.integer, np.floating)):
            flat[name] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, enum.Enum):
            flat[name] = value.name
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = str(value)
    return flat


class HParams(VisualHook):
    place = 90
    options = (Option("hparams", True, bool, validate.boolean,
                      "flattened config as an HParams session (metrics: the run's scalars)"),)

    def __init__(self, ctx: VisualContext):
        super().__init__(ctx)
        self.started = False

    def on_fit_start(self, state: TrainState) -> None:
        ctx = self.ctx
        if ctx.settings.hparams and ctx.writer.enabled:
            if ctx.hparam_columns:
                ctx.writer.add_experiment({c: ctx.hparams[c] for c in ctx.hparam_columns},
                                          metric_columns(state.monitor),
                                          differing=ctx.differing)
            ctx.writer.add_session_start(ctx.hparams)
            self.started = True

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        if self.started:
            self.ctx.writer.add_session_end("success" if error is None else "failure")
