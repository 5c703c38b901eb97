"""What the tasks on a trained run share: which run (``trainer.resume``) and checkpoint
(``checkpoint=best|last``) they load, that its model is not overridden, and which data they
read (:func:`choose_data`: eval's data and export's verification images)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from convtrain import validate
from convtrain.app import preflight
from convtrain.app.config_values import config_name
from convtrain.errors import ConfigError

if TYPE_CHECKING:  # loaded when a task runs: every task module loads with the schema, and
    from convtrain.inference import TrainedRun  # `convtrain --help` stays fast (tasks/__init__)


def command_line_overrides(cfg: DictConfig) -> list[str]:
    """The overrides the user gave (``HydraConfig``'s task overrides; a config composed with
    ``return_hydra_config=True`` carries them too; none when run from a bare config)."""
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    hydra = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    return list(hydra.overrides.task) if hydra is not None else []


def _parsed_keys(overrides: list[str]) -> list[tuple[str, bool, str]]:
    """``(key or group, is a deletion, the override as typed)`` of each override of the
    config's own keys (not ``hydra.*`` packages)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [(o.key_or_group, o.is_delete(), o.input_line or o.key_or_group)
            for o in parsed if o.package is None]


def refuse_model_overrides(cfg: DictConfig) -> None:
    """A task on a trained run uses the checkpoint's model: ``model=NAME`` or ``model.KEY=...``
    on its command line would be silently ignored, so it is refused.

    Raises:
        ConfigError: naming the first such override.
    """
    for key, _, typed in _parsed_keys(command_line_overrides(cfg)):
        if key.lstrip("+~") == "model" or key.lstrip("+~").startswith("model."):
            raise ConfigError(f"{typed}: task={config_name(cfg.task)} cannot change the model: "
                              "the model comes from the checkpoint of trainer.resume (drop the "
                              "override, or train a run with it)")


def checkpoint_file(cfg: DictConfig) -> Path:
    """The checkpoint file ``trainer.resume`` and ``checkpoint`` name. Checked by
    :class:`convtrain.app.rundir.RunDirGuard` before Hydra creates ``RUN_DIR/<task>/``, so a
    mistyped run directory is not created.

    Raises:
        ConfigError: no ``trainer.resume``, or no such run directory or checkpoint; a
            ``model`` override (:func:`refuse_model_overrides`).
    """
    refuse_model_overrides(cfg)
    task = config_name(cfg.task)
    resume = cfg.trainer.get("resume")
    if resume is None:
        raise ConfigError(f"task={task} works on a trained run: set "
                          f"trainer.resume=RUN_DIR (a training run's directory) or "
                          f"trainer.resume=FILE.safetensors")
    from convtrain.inference import resolve_run_checkpoint  # noqa: PLC0415

    return resolve_run_checkpoint(str(resume), str(cfg.checkpoint), where="trainer.resume")


def load_trained(cfg: DictConfig, plan: preflight.Plan) -> TrainedRun:
    """The run named by ``trainer.resume`` (a run directory or a checkpoint file), with the
    ``checkpoint`` the config asks for, on the configured backend.

    Raises:
        ConfigError: no ``trainer.resume``, or a missing / damaged / mismatched checkpoint.
    """
    from convtrain.inference import load_run  # noqa: PLC0415

    return load_run(checkpoint_file(cfg), backend=plan.backend, where="trainer.resume")


@dataclasses.dataclass(frozen=True)
class DataChoice:
    """The data a task reads: the ``data:`` mapping, the seed and where they came from."""

    data: dict[str, Any]
    seed: int
    source: str  # for the log: "the run's data config", "data=cifar10 from the command line"


def choose_data(cfg: DictConfig, plan: preflight.Plan, trained: TrainedRun,
                overrides: list[str]) -> DataChoice:
    """The data of ``task=eval`` (its module docstring) and of export's verification images:
    the run's data config and seed (from its checkpoint), with the command line's ``data.KEY``
    / ``seed`` overrides on top, or the composed ``data`` for ``data=NAME``."""
    keys = [(key, delete) for key, delete, _ in _parsed_keys(overrides)]
    seed_set = any(key == "seed" for key, _ in keys)
    seed = plan.seed if seed_set else validate.seed(trained.config.get("seed", 0))
    composed = OmegaConf.to_container(cfg.data, resolve=True)
    if any(key == "data" for key, _ in keys):
        return DataChoice(composed, seed, f"data={composed.get('name')} from the command line")
    data = OmegaConf.create(trained.config.get("data") or {})
    changed = [key for key, _ in keys if key.startswith("data.")]
    for key, delete in keys:
        if not key.startswith("data."):
            continue
        sub = key[len("data."):]
        if delete:  # ~data.KEY: back to the default
            parent, _, leaf = sub.rpartition(".")
            node = OmegaConf.select(data, parent) if parent else data
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
        else:
            OmegaConf.update(data, sub, OmegaConf.select(cfg.data, sub), merge=False)
    source = "the run's data config" + (f" with {', '.join(changed)} from the command line"
                                        if changed else "")
    return DataChoice(OmegaConf.to_container(data, resolve=True), seed, source)
