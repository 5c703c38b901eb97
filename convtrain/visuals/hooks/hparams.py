"""An HParams session: the run's flattened config when training starts, its status
(``success``, or ``failure`` when an error or Ctrl-C stops training) when it ends. The
dashboard takes the metrics from the run's scalars (one row per run of a sweep)."""
from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from convtrain import validate
from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import Option, VisualContext, VisualHook

if TYPE_CHECKING:
    from convtrain.visuals.tensorboard import HParamValue


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
        if self.ctx.settings.hparams and self.ctx.writer.enabled:
            self.ctx.writer.add_session_start(self.ctx.hparams)
            self.started = True

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        if self.started:
            self.ctx.writer.add_session_end("success" if error is None else "failure")
