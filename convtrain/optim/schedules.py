"""Per-epoch learning-rate schedules and their registry.

A schedule is a pure function of the 0-based epoch index: ``lr_at(epoch) -> float``. The
Trainer sets ``optimizer.lr = schedule.lr_at(epoch)`` at the start of every epoch, so resuming
from a checkpoint needs no schedule state.

Resuming follows the schedule of the *resumed run's* config. Checkpoints store
:meth:`Schedule.resolved` (``t_max`` included when it was defaulted), and the Trainer warns,
naming the key, when the resumed run's curve differs: typically ``scheduler.t_max`` left unset
while ``trainer.max_epochs`` was raised. The new curve is kept on purpose: continuing the
checkpoint's would hold the lr at ``eta_min`` (often 0) for every extra epoch. Set
``scheduler.t_max`` explicitly to keep one curve across resumes.

Linear warm-up (``warmup_epochs = W``, any schedule): for ``epoch < W`` the schedule's lr is
multiplied by ``(epoch + 1) / (W + 1)``, so the first epoch never runs at lr 0 and the factor
reaches 1 at epoch ``W``. Epoch counts in ``step``/``multistep`` are absolute (milestones
``[30, 60]`` decay at epochs 30 and 60 whatever the warm-up), while ``cosine`` starts its decay
when the warm-up ends (see :class:`Cosine`).
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from convtrain import validate as check
from convtrain.errors import ConfigError, InternalError
from convtrain.optim.options import Configurable, Epochs, Integer, Real, parse_config
from convtrain.registry import Registry

#: ``@SCHEDULES.register("cosine")`` registers a Schedule subclass under its config ``name``.
SCHEDULES: Registry[type["Schedule"]] = Registry("schedule")

WARMUP_EPOCHS = Integer(0, "epochs of linear warm-up before the schedule (0 = none)", low=0)
# gamma > 1 would grow the lr without bound; no schedule here is meant to do that
GAMMA = Real(0.1, "factor the learning rate is multiplied by at each decay", low=0.0, high=1.0,
             low_open=True)


class Schedule(Configurable):
    """Base class: ``base_lr`` scaled by :meth:`factor`, times the warm-up ramp.

    Settings are declared once per class in ``options`` and set as attributes by the
    constructor (see :mod:`convtrain.optim.options`).

    Attributes:
        base_lr: the optimizer's configured learning rate.
        warmup_epochs: length of the linear warm-up (0 = none).
    """

    group = "scheduler"
    kind = "schedule"
    options = {"warmup_epochs": WARMUP_EPOCHS}

    def __init__(self, base_lr: float, **settings: Any):
        self.base_lr = check.real("optimizer.lr", base_lr, low=0.0)
        self.set_options(settings)
        #: option -> the config key it was derived from when the user left it unset
        #: (``{"t_max": "trainer.max_epochs"}`` for cosine's default; set by build_schedule)
        self.derived: dict[str, str] = {}
        self.check_settings()

    @classmethod
    def derive_defaults(cls, settings: dict[str, Any], max_epochs: Any) -> dict[str, str]:
        """Fill settings whose default depends on the run (in place); return ``{key: source}``.

        Only :class:`Cosine` has one (``t_max`` follows ``trainer.max_epochs``).
        """
        return {}

    def check_settings(self) -> None:
        """Rules between settings (each setting alone is checked by its declaration)."""

    def resolved(self) -> dict[str, Any]:
        """Everything that decides the lr curve, JSON-ready (stored in checkpoints)."""
        out: dict[str, Any] = {"name": self.name, "base_lr": self.base_lr}
        for key in self.options:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def lr_at(self, epoch: int) -> float:
        """Learning rate for the 0-based ``epoch``."""
        _check_epoch(epoch)
        lr = self.base_lr * self.factor(epoch)
        if epoch < self.warmup_epochs:
            lr *= (epoch + 1) / (self.warmup_epochs + 1)
        return lr

    def factor(self, epoch: int) -> float:
        """Multiplier on ``base_lr`` for ``epoch`` before warm-up."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return super().__repr__().replace("(", f"(base_lr={self.base_lr!r}, ", 1)


def _check_epoch(epoch: int) -> None:
    # epochs come from the training loop, never from a config
    if epoch < 0:
        raise InternalError(f"epoch must be >= 0, got {epoch}")


@SCHEDULES.register("constant")
class Constant(Schedule):
    """``lr = base_lr`` (after the optional warm-up)."""

    name = "constant"

    def factor(self, epoch: int) -> float:
        return 1.0


@SCHEDULES.register("step")
class Step(Schedule):
    """``lr = base_lr * gamma ** (epoch // step_size)`` (``torch.optim.lr_scheduler.StepLR``)."""

    name = "step"
    options = {"step_size": Integer(10, "epochs between two decays", low=1),
               "gamma": GAMMA, "warmup_epochs": WARMUP_EPOCHS}

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)`` (``MultiStepLR``)."""

    name = "multistep"
    # the empty default is there for the schema; a run must list its milestones
    options = {"milestones": Epochs((), "epochs at which the learning rate decays"),
               "gamma": GAMMA, "warmup_epochs": WARMUP_EPOCHS}

    def factor(self, epoch: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """``lr = base_lr * gamma ** epoch`` (``ExponentialLR``)."""

    name = "exponential"
    options = {"gamma": dataclasses.replace(GAMMA, default=0.95), "warmup_epochs": WARMUP_EPOCHS}

    def factor(self, epoch: int) -> float:
        return self.gamma ** epoch


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` after the warm-up ``W``::

        lr = base_lr * (epoch + 1) / (W + 1)                           epoch < W
        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * (epoch - W) / (t_max - W))) / 2
                                                                       W < epoch < t_max
        lr = eta_min                                                   epoch >= t_max

    With ``W = 0`` this is ``CosineAnnealingLR(T_max=t_max)``; ``t_max`` defaults to
    ``trainer.max_epochs`` of the run being built, also when it resumes a checkpoint trained
    with another ``max_epochs`` (the Trainer then warns, naming ``scheduler.t_max``; see the
    module docstring). Unlike PyTorch the lr stays at ``eta_min`` after ``t_max`` rather than
    rising again.
    """

    name = "cosine"
    options = {"t_max": Integer(None, "last epoch of the decay (default: trainer.max_epochs)",
                                low=1, optional=True),
               "eta_min": Real(0.0, "learning rate at the end of the decay", low=0.0),
               "warmup_epochs": WARMUP_EPOCHS}

    @classmethod
    def derive_defaults(cls, settings: dict[str, Any], max_epochs: Any) -> dict[str, str]:
        if settings.get("t_max") is not None:
            return {}
        warmup = cls.options["warmup_epochs"].check("scheduler.warmup_epochs",
                                                    settings.get("warmup_epochs", 0))
        settings["t_max"] = check.integer("trainer.max_epochs", max_epochs, low=1)
        # the same rule as for an explicit t_max (check_settings): the decay follows the warm-up
        if warmup >= settings["t_max"]:
            raise ConfigError(
                f"scheduler.warmup_epochs: must be less than trainer.max_epochs="
                f"{settings['t_max']} (cosine decays over the epochs after the warm-up, "
                f"until scheduler.t_max, which defaults to trainer.max_epochs), got {warmup}"
            )
        return {"t_max": "trainer.max_epochs"}

    def check_settings(self) -> None:
        if self.t_max is None:
            raise TypeError("Cosine() needs t_max (build_schedule derives it from "
                            "trainer.max_epochs)")
        if self.t_max <= self.warmup_epochs:
            raise ConfigError(
                f"scheduler.t_max: must exceed scheduler.warmup_epochs={self.warmup_epochs} "
                f"(the decay starts after the warm-up), got {self.t_max}"
            )
        if self.eta_min > self.base_lr:
            raise ConfigError(
                f"scheduler.eta_min: must not exceed optimizer.lr={self.base_lr:g}, "
                f"got {self.eta_min:g}"
            )

    def lr_at(self, epoch: int) -> float:
        # eta_min is an absolute lr, so the decay is not a pure factor of base_lr
        _check_epoch(epoch)
        w = self.warmup_epochs
        if epoch < w:
            return self.base_lr * (epoch + 1) / (w + 1)
        if epoch >= self.t_max:
            return self.eta_min
        progress = (epoch - w) / (self.t_max - w)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2

    def factor(self, epoch: int) -> float:
        return self.lr_at(epoch) / self.base_lr if self.base_lr else 1.0


def build_schedule(cfg: Mapping[str, Any] | None, base_lr: float, max_epochs: int) -> Schedule:
    """Build the schedule named by ``cfg["name"]`` (``None`` or ``{}`` means ``constant``).

    ``base_lr`` is the optimizer's lr; ``max_epochs`` is the default ``t_max`` of ``cosine``
    (recorded in ``schedule.derived``).

    Raises:
        ConfigError: naming ``scheduler.<key>`` for an unknown schedule or key, or a bad value.
    """
    cls, settings = parse_config(SCHEDULES, "scheduler", cfg, default_name="constant")
    derived = cls.derive_defaults(settings, max_epochs)
    schedule = cls(base_lr, **settings)
    schedule.derived = derived
    return schedule
