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
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from convtrain import validate as check
from convtrain.errors import ConfigError
from convtrain.registry import Registry

#: ``@SCHEDULES.register("cosine")`` registers a Schedule subclass under its config ``name``.
SCHEDULES: Registry[type["Schedule"]] = Registry("schedule")


class Schedule:
    """Base class: ``base_lr`` scaled by :meth:`factor`, times the warm-up ramp.

    Attributes:
        base_lr: the optimizer's configured learning rate.
        warmup_epochs: length of the linear warm-up (0 = none).
    """

    #: options a config may set besides ``name``, with their defaults.
    options: ClassVar[dict[str, Any]] = {"warmup_epochs": 0}
    name: ClassVar[str] = ""

    def __init__(self, base_lr: float, *, warmup_epochs: int = 0):
        self.base_lr = check.real("optimizer.lr", base_lr, low=0.0)
        self.warmup_epochs = check.integer("scheduler.warmup_epochs", warmup_epochs, low=0)
        #: option -> the config key it was derived from when the user left it unset
        #: (``{"t_max": "trainer.max_epochs"}`` for cosine's default; set by build_schedule)
        self.derived: dict[str, str] = {}

    def resolved(self) -> dict[str, Any]:
        """Everything that decides the lr curve, JSON-ready (stored in checkpoints)."""
        out: dict[str, Any] = {"name": self.name, "base_lr": self.base_lr}
        for key in self.options:
            value = getattr(self, key)
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def lr_at(self, epoch: int) -> float:
        """Learning rate for the 0-based ``epoch``."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        lr = self.base_lr * self.factor(epoch)
        if epoch < self.warmup_epochs:
            lr *= (epoch + 1) / (self.warmup_epochs + 1)
        return lr

    def factor(self, epoch: int) -> float:
        """Multiplier on ``base_lr`` for ``epoch`` before warm-up."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.options)
        return f"{type(self).__name__}(base_lr={self.base_lr!r}, {opts})"


def _gamma(value: Any) -> float:
    # gamma > 1 would grow the lr without bound; no schedule here is meant to do that
    return check.real("scheduler.gamma", value, low=0.0, high=1.0, low_open=True)


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
    options = {"step_size": 10, "gamma": 0.1, "warmup_epochs": 0}

    def __init__(self, base_lr: float, *, step_size: int = 10, gamma: float = 0.1,
                 warmup_epochs: int = 0):
        super().__init__(base_lr, warmup_epochs=warmup_epochs)
        self.step_size = check.integer("scheduler.step_size", step_size, low=1)
        self.gamma = _gamma(gamma)

    def factor(self, epoch: int) -> float:
        return self.gamma ** (epoch // self.step_size)


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """``lr = base_lr * gamma ** (number of milestones <= epoch)`` (``MultiStepLR``)."""

    name = "multistep"
    options = {"milestones": (), "gamma": 0.1, "warmup_epochs": 0}

    def __init__(self, base_lr: float, *, milestones: Sequence[int] = (), gamma: float = 0.1,
                 warmup_epochs: int = 0):
        super().__init__(base_lr, warmup_epochs=warmup_epochs)
        if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence) \
                or len(milestones) == 0:
            raise ConfigError(
                f"scheduler.milestones: expected a non-empty list of epochs like [30, 60], "
                f"got {milestones!r}"
            )
        ms = [check.integer(f"scheduler.milestones[{i}]", m, low=1)
              for i, m in enumerate(milestones)]
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ConfigError(f"scheduler.milestones: must be strictly increasing, got {ms}")
        self.milestones = tuple(ms)
        self.gamma = _gamma(gamma)

    def factor(self, epoch: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)


@SCHEDULES.register("exponential")
class Exponential(Schedule):
    """``lr = base_lr * gamma ** epoch`` (``ExponentialLR``)."""

    name = "exponential"
    options = {"gamma": 0.95, "warmup_epochs": 0}

    def __init__(self, base_lr: float, *, gamma: float = 0.95, warmup_epochs: int = 0):
        super().__init__(base_lr, warmup_epochs=warmup_epochs)
        self.gamma = _gamma(gamma)

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
    options = {"t_max": None, "eta_min": 0.0, "warmup_epochs": 0}

    def __init__(self, base_lr: float, *, t_max: int, eta_min: float = 0.0,
                 warmup_epochs: int = 0):
        super().__init__(base_lr, warmup_epochs=warmup_epochs)
        self.t_max = check.integer("scheduler.t_max", t_max, low=1)
        self.eta_min = check.real("scheduler.eta_min", eta_min, low=0.0)
        if self.eta_min > self.base_lr:
            raise ConfigError(
                f"scheduler.eta_min: must not exceed optimizer.lr={self.base_lr:g}, "
                f"got {self.eta_min:g}"
            )

    def lr_at(self, epoch: int) -> float:
        # eta_min is an absolute lr, so the decay is not a pure factor of base_lr
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
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
    options = check.mapping("scheduler", cfg if cfg is not None else {},
                            expected="a mapping like {name: ..., ...}")
    name = options.pop("name", "constant")
    cls = SCHEDULES.get(name, where="scheduler.name")
    check.reject_unknown_keys(
        "scheduler", "schedule", name, options, list(cls.options),
        {n: list(SCHEDULES.get(n).options) for n in SCHEDULES.names()},
    )
    derived = {}
    if cls is Cosine:
        warmup = check.integer("scheduler.warmup_epochs", options.get("warmup_epochs", 0), low=0)
        if options.get("t_max") is None:
            options["t_max"] = check.integer("trainer.max_epochs", max_epochs, low=1)
            derived["t_max"] = "trainer.max_epochs"
            # the same rule as an explicit t_max below: the decay starts after the warm-up
            if warmup >= options["t_max"]:
                raise ConfigError(
                    f"scheduler.warmup_epochs: must be less than trainer.max_epochs="
                    f"{options['t_max']} (cosine decays over the epochs after the warm-up, "
                    f"until scheduler.t_max, which defaults to trainer.max_epochs), got {warmup}"
                )
        elif check.integer("scheduler.t_max", options["t_max"], low=1) <= warmup:
            raise ConfigError(
                f"scheduler.t_max: must exceed scheduler.warmup_epochs="
                f"{options.get('warmup_epochs')} (the decay starts after the warm-up), "
                f"got {options['t_max']}"
            )
    schedule = cls(base_lr, **options)
    schedule.derived = derived
    return schedule
