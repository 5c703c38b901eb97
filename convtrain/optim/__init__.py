"""Optimizers (``sgd``, ``adam``, ``adamw``, ``rmsprop``) and per-epoch lr schedules."""
from convtrain.optim.optimizers import OPTIMIZERS, Optimizer, build_optimizer
from convtrain.optim.schedules import SCHEDULES, Schedule, build_schedule

__all__ = ["OPTIMIZERS", "SCHEDULES", "Optimizer", "Schedule", "build_optimizer",
           "build_schedule"]
