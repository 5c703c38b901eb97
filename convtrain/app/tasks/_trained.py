"""What the tasks on a trained run share: which run (``trainer.resume``) and checkpoint
(``checkpoint=best|last``) they load."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from convtrain.app import preflight
from convtrain.errors import ConfigError
from convtrain.inference import TrainedRun, load_run, resolve_run_checkpoint


def checkpoint_file(cfg: DictConfig) -> Path:
    """The checkpoint file ``trainer.resume`` and ``checkpoint`` name. Checked by
    :class:`convtrain.app.rundir.RunDirGuard` before Hydra creates ``RUN_DIR/<task>/``, so a
    mistyped run directory is not created.

    Raises:
        ConfigError: no ``trainer.resume``, or no such run directory or checkpoint.
    """
    task = str(getattr(cfg.task, "value", cfg.task))
    resume = cfg.trainer.get("resume")
    if resume is None:
        raise ConfigError(f"task={task} works on a trained run: set "
                          f"trainer.resume=RUN_DIR (a training run's directory) or "
                          f"trainer.resume=FILE.safetensors")
    return resolve_run_checkpoint(str(resume), str(cfg.checkpoint), where="trainer.resume")


def load_trained(cfg: DictConfig, plan: preflight.Plan) -> TrainedRun:
    """The run named by ``trainer.resume`` (a run directory or a checkpoint file), with the
    ``checkpoint`` the config asks for, on the configured backend.

    Raises:
        ConfigError: no ``trainer.resume``, or a missing / damaged / mismatched checkpoint.
    """
    return load_run(checkpoint_file(cfg), backend=plan.backend, where="trainer.resume")
