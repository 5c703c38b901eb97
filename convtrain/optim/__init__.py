"""Optimizers (``sgd``, ``adam``, ``adamw``, ``rmsprop``) and per-epoch lr schedules.

Each one declares its settings once (``options``; see :mod:`convtrain.optim.options`): the
constructor's checks, the config's unknown-key messages and the Hydra schema follow from it.
"""
from convtrain.optim.optimizers import OPTIMIZERS, Optimizer, build_optimizer
from convtrain.optim.options import config_dataclass
from convtrain.optim.schedules import SCHEDULES, Schedule, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "Schedule", "build_optimizer",
           "build_schedule", "config_dataclass"]
