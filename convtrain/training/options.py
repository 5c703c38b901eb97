"""The ``trainer.*`` config keys: each default and each check written once, here.

:class:`TrainerOptions` is at the same time the Hydra schema of the ``trainer`` group
(``convtrain.app.schema`` stores it), the source of the Trainer's keyword defaults, and, through
:func:`check_trainer_options`, the one set of checks that both the Trainer and the pre-data
checks (``convtrain.app.preflight``) run. A field's ``check`` takes the full key and the value and
returns the value as a plain Python type, or raises ConfigError starting with the key.
"""
from __future__ import annotations

import dataclasses
import enum
import os
from typing import Any, Callable, Mapping, Optional

from convtrain import validate
from convtrain.errors import ConfigError

#: metric name -> whether larger is better ("max") or smaller ("min").
MONITORS = {"val_accuracy": "max", "val_loss": "min", "train_accuracy": "max",
            "train_loss": "min"}

#: The metric that picks the ``best`` checkpoint and that the app returns to sweepers (an enum,
#: so Hydra rejects ``trainer.monitor=val_acc`` while composing the config).
Monitor = enum.Enum("Monitor", {name: name for name in MONITORS})


def _monitor(key: str, value: Any) -> str:
    name = value.value if isinstance(value, enum.Enum) else value
    if name not in MONITORS:
        raise ConfigError(f"{key}: expected one of {', '.join(MONITORS)}, got {value!r}")
    return name


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` that lets None (the key's "default" / "auto" setting) through."""
    return lambda key, value: None if value is None else check(key, value)


def _checkpoint_path(key: str, value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{key}: expected the path of a checkpoint or run directory, "
                          f"got {value!r}")
    return os.fspath(value)


def _drop_last(key: str, value: Any) -> bool:
    return validate.boolean(key, value, expected="true, false or null (auto)")


def _option(default: Any, check: Callable[[str, Any], Any]) -> Any:
    return dataclasses.field(default=default, metadata={"check": check})


@dataclasses.dataclass
class TrainerOptions:
    """The ``trainer`` config group (``configs/trainer/default.yaml`` shows them with comments)."""

    max_epochs: int = _option(30, validate.positive_int)
    batch_size: int = _option(32, validate.positive_int)
    # None: 4 x batch_size
    eval_batch_size: Optional[int] = _option(None, _optional(validate.positive_int))
    # auto (bars only when stderr is a terminal) | true | false
    progress: str = _option("auto", validate.progress)
    # period of the step/loss scalar; 0 = off
    log_every_n_steps: int = _option(
        50, lambda key, v: validate.non_negative_int(key, v, zero_means="off"))
    checkpoint: bool = _option(True, validate.boolean)
    monitor: Monitor = _option(Monitor.val_accuracy, _monitor)
    # a checkpoint file, or a run / checkpoints directory (meaning its `last`)
    resume: Optional[str] = _option(None, _optional(_checkpoint_path))
    # None = auto: drop a 1-sample last batch only where a batch-norm layer cannot train on it
    drop_last: Optional[bool] = _option(None, _optional(_drop_last))


#: the defaults as an instance (``TRAINER_DEFAULTS.batch_size``)
TRAINER_DEFAULTS = TrainerOptions()


def resolve_eval_batch_size(trainer: Mapping[str, Any]) -> int:
    """The images per evaluation pass of a ``trainer`` mapping (checked options, or a run's
    stored ``trainer`` config): ``eval_batch_size``, or when it is unset 4 x ``batch_size``
    (its default where that is unset too): larger batches are cheap without a backward pass."""
    batch_size = trainer.get("batch_size") or TRAINER_DEFAULTS.batch_size
    return int(trainer.get("eval_batch_size") or 4 * int(batch_size))


def check_trainer_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (the ``trainer`` group, or the Trainer's keyword arguments) checked.

    Missing keys take their defaults; ``eval_batch_size`` stays None when unset (the Trainer
    resolves it). ``progress`` is ``"auto"``, True or False; ``monitor`` a :data:`MONITORS` name.

    Raises:
        ConfigError: naming ``trainer.<key>`` for an unknown key or a bad value.
    """
    fields = dataclasses.fields(TrainerOptions)
    known = [f.name for f in fields]
    for key in values:
        if key not in known:
            raise validate.unknown_key("trainer", key, known)
    return {f.name: f.metadata["check"](f"trainer.{f.name}", values.get(f.name, f.default))
            for f in fields}
