"""The tasks of the ``convtrain`` command: ``task=NAME`` runs the task registered as NAME.

One module per task, registered by being in this package (like layers): a module calls
:func:`register_task` on a function ``run(cfg, plan, run_dir) -> float | None`` (the value is
what Hydra sweepers optimise; None when there is nothing to optimise). The schema's ``task``
choices come from this registry, so a task exists exactly when its module does.

Tasks marked ``after_training`` use a trained run (``trainer.resume=RUN_DIR``); their Hydra run
directory is ``RUN_DIR/<task>`` (:func:`task_run_dir`), so their log, config and results land
beside the run they describe instead of in a new ``outputs/...`` directory (a single run:
under ``-m`` each job runs in Hydra's sweep directory, ``multirun/DATE/TIME/N/``).

Imports: every task module is loaded with the schema (``convtrain --help`` too), so a task
module imports the heavy rooms (inference, data, nn models, export, training) inside the
functions that use them, and type hints of them under ``TYPE_CHECKING``. Measured: with
``convtrain.inference`` (and through it ``nn.model``) no longer loaded at start,
``import convtrain.app.cli`` went from 0.44 s to 0.39 s (median of 5, 2 busy cores).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path
from typing import Any, Callable

from convtrain.app.config_values import config_name
from convtrain.registry import Registry
from convtrain.training.checkpoint import run_directory

TaskFunction = Callable[[Any, Any, Path], "float | None"]


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task: its ``run`` function, and whether it works on a trained run."""

    name: str
    run: TaskFunction
    after_training: bool = False


TASKS: Registry[Task] = Registry("task")


def register_task(name: str, *, after_training: bool = False) -> Callable[[TaskFunction], TaskFunction]:
    """Decorator: ``@register_task("eval", after_training=True) def run(cfg, plan, run_dir)``."""
    def register(run: TaskFunction) -> TaskFunction:
        TASKS.register(name)(Task(name, run, after_training))
        return run
    return register


def works_on_trained_run(task: Any) -> bool:
    """True for a registered task marked ``after_training`` (``task`` a name or the schema's
    enum member, which is what ``${task}`` interpolates to)."""
    name = str(config_name(task))
    return name in TASKS and TASKS.get(name).after_training


def task_run_dir(task: Any, resume: Any, default: str) -> str:
    """Hydra's run directory (``hydra.run.dir``, see configs/hydra/default.yaml): the trained
    run's ``<task>/`` subdirectory for a task that works on one (when that run exists), else
    ``default``.
    ``task``: the name, or the schema's ``Task`` enum member that ``${task}`` resolves to."""
    task = str(config_name(task))
    if works_on_trained_run(task) and resume not in (None, ""):
        path = run_directory(str(resume))
        if path.is_dir():  # a mistyped path must not become a new directory: the task's
            return str(path / task)  # own check names it (and the run goes to `default`)
    return default


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
