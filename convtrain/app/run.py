"""One run: check the config, then run the task it names (``task=train`` by default).

Kept apart from the CLI so tests and notebooks can call :func:`run` with a config built by
Hydra's compose API. The tasks live in :mod:`convtrain.app.tasks`, one module each.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from convtrain.app import preflight
from convtrain.app.tasks import TASKS


def run(cfg: DictConfig, *, run_dir: Path) -> float | None:
    """Run ``cfg.task`` (train, summary, eval, ...: see :mod:`convtrain.app.tasks`).

    Every setting is checked before the data is loaded (:mod:`convtrain.app.preflight`).

    Returns:
        what the task returns: for ``task=train`` the best value of ``trainer.monitor`` (what
        Hydra sweepers such as Optuna optimise); None for tasks with nothing to optimise.

    Raises:
        ConfigError: naming the offending key.
    """
    plan = preflight.check(cfg)
    preflight.apply_engine_settings(plan.engine)
    return TASKS.get(plan.task, where="task").run(cfg, plan, run_dir)
