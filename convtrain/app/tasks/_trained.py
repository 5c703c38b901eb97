"""What the tasks on a trained run share: which run (``trainer.resume``) and checkpoint
(``checkpoint=best|last``) they load."""
from __future__ import annotations

from omegaconf import DictConfig

from convtrain.app import preflight
from convtrain.errors import ConfigError
from convtrain.inference import TrainedRun, load_run


def load_trained(cfg: DictConfig, plan: preflight.Plan) -> TrainedRun:
    """The run named by ``trainer.resume`` (a run directory or a checkpoint file), with the
    ``checkpoint`` the config asks for, on the configured backend.

    Raises:
        ConfigError: no ``trainer.resume``, or a missing / damaged / mismatched checkpoint.
    """
    resume = plan.trainer.get("resume")
    if resume is None:
        raise ConfigError(f"task={plan.task} works on a trained run: set "
                          f"trainer.resume=RUN_DIR (a training run's directory) or "
                          f"trainer.resume=FILE.safetensors")
    return load_run(str(resume), checkpoint=str(cfg.checkpoint), backend=plan.backend,
                    where="trainer.resume")
