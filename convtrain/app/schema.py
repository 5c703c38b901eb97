"""The typed config schema, registered with Hydra's ConfigStore.

``configs/train.yaml`` starts its defaults list with ``schema``, so every composed config is
merged into :class:`TrainConfig`: a wrong type (``trainer.max_epochs=abc``) or an unknown key
(``trainer.max_epoch=3``) fails during composition, before any data is loaded, with the full key
named (the CLI adds a "did you mean" for typos, see :mod:`convtrain.app.hydra_errors`).

Optimizers and schedules take different keys, so each one has its own dataclass, derived from
the settings it declares in :mod:`convtrain.optim` (names, types, defaults), stored at the top
level as ``schema_optimizer_<name>`` / ``schema_scheduler_<name>`` and pulled in by the defaults
list of ``configs/optimizer/<name>.yaml`` (Hydra's "config group schema" pattern, kept out of
the groups so that ``--help`` lists only the user's choices).

The schema checks types and key names only. Ranges (``optimizer.lr > 0``), ``+key=`` additions
(which Hydra lets past the schema on purpose) and per-layer keys are checked by the registries,
all before data loading (:mod:`convtrain.app.preflight`).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from convtrain.app.tasks import TASKS, task_run_dir
from convtrain.app.tasks.eval import EvalConfig
from convtrain.app.tasks.gradcheck import GradcheckConfig
from convtrain.export.settings import ExportSettings
from convtrain.optim import OPTIMIZERS, SCHEDULES, config_dataclass
from convtrain.training.options import TrainerOptions
from convtrain.visuals.settings import LoggerSettings


class BackendName(enum.Enum):
    numpy = "numpy"
    cupy = "cupy"


class DType(enum.Enum):
    float32 = "float32"
    float64 = "float64"


#: ``task=`` choices: the tasks registered in :mod:`convtrain.app.tasks` (one module each)
Task = enum.Enum("Task", {name: name for name in TASKS.names()})  # type: ignore[misc]


@dataclasses.dataclass
class BackendConfig:
    name: BackendName = BackendName.numpy
    dtype: DType = DType.float32


@dataclasses.dataclass
class ModelConfig:
    """``layers`` maps layer names to ``{type: <registered layer>, ...}`` (checked per type by
    the layer registry) or to block instances ``{block: <name>, ...}``; ``blocks`` defines the
    reusable blocks (convtrain/nn/blocks.py); ``init`` is the default initializer of conv/dense
    layers."""

    name: Optional[str] = None
    init: str = "he_normal"
    # the (C, H, W) the model is drawn for, when no dataset has it (task=summary uses it)
    input_shape: Optional[List[int]] = None
    blocks: Dict[str, Any] = dataclasses.field(default_factory=dict)
    layers: Dict[str, Any] = MISSING


@dataclasses.dataclass
class AugmentConfig:
    """Per-batch training augmentation (``data.augment.random_crop=4``); all off by default."""

    random_crop: int = 0  # pad by this many pixels, crop back to the original size; 0 = off
    horizontal_flip: bool = False


@dataclasses.dataclass
class DataConfig:
    name: str = MISSING
    val_fraction: float = 0.1
    normalize: bool = True
    root: Optional[str] = None
    download: bool = False
    mirror: Optional[str] = None
    subset: Optional[int] = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)


# The trainer and logger groups are declared where they are used (defaults and checks in one
# place); the schema takes them from there.
TrainerConfig = TrainerOptions
LoggerConfig = LoggerSettings


# --- optimizers and schedules: derived from the settings each one declares in convtrain.optim ---
#: the ``optimizer`` / ``scheduler`` schemas by registry name (``SGDConfig``, ``CosineConfig``, ...)
OPTIMIZER_SCHEMAS: Dict[str, type] = {name: config_dataclass(OPTIMIZERS.get(name))
                                      for name in OPTIMIZERS.names()}
SCHEDULER_SCHEMAS: Dict[str, type] = {name: config_dataclass(SCHEDULES.get(name))
                                      for name in SCHEDULES.names()}


def schema_name(group: str, name: str) -> str:
    """The ConfigStore name of one choice's schema: ``schema_optimizer_sgd``.

    Stored at the top level, not in the ``optimizer`` group, so that ``convtrain --help`` (which
    lists every option of every group) shows only the user's choices; ``configs/optimizer/
    sgd.yaml`` pulls it in with ``defaults: [/schema_optimizer_sgd]``.
    """
    return f"schema_{group}_{name}"


@dataclasses.dataclass
class EngineConfig:
    """Process-wide settings of the NumPy engine (see benchmarks/RESULTS.md for their effect)."""

    max_workspace_mb: Optional[float] = 256.0  # conv scratch cap; larger batches run in chunks; null = no cap
    num_threads: int = 2  # threads for copies/elementwise work (1 = off); BLAS keeps its own
    keep_freed_memory: bool = True  # glibc keeps freed memory: no page faults per step, RSS stays at peak
    pin_threads: bool = True  # pin engine threads to CPUs when the process has exactly num_threads CPUs


@dataclasses.dataclass
class PredictConfig:
    """``task=predict`` (convtrain/app/tasks/predict.py; what is read: convtrain/inference/inputs.py)."""

    inputs: Any = None  # a file, a directory or a glob pattern (or a list of them)
    top_k: Optional[int] = None  # classes listed per input; null: 3 (every class when fewer)
    resize: bool = False  # resize inputs of another height/width (Pillow, bilinear) instead of refusing them


@dataclasses.dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Any: the concrete dataclass comes with the chosen option (schema_optimizer_sgd, ...); a typed
    # default here would make every other option's dataclass a merge error.
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    backend: BackendConfig = dataclasses.field(default_factory=BackendConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    task: Task = Task.train  # type: ignore[attr-defined]
    seed: int = 0
    # tasks on a trained run (eval, predict, export): which checkpoint of trainer.resume's run
    # directory they load, best (by trainer.monitor) or last; a checkpoint file is used as is
    checkpoint: str = "best"
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)  # task=eval: eval.split, ...
    predict: PredictConfig = dataclasses.field(default_factory=PredictConfig)
    export: ExportSettings = dataclasses.field(default_factory=ExportSettings)  # task=export
    gradcheck: GradcheckConfig = dataclasses.field(default_factory=GradcheckConfig)  # task=gradcheck
    # a new run may replace the results of an earlier run in its directory (see app/rundir.py)
    overwrite_run_dir: bool = False


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore and the resolver that puts a task on a trained
    run into that run's directory (``${convtrain_task_dir:...}`` in configs/hydra/default.yaml);
    idempotent: re-storing replaces."""
    OmegaConf.register_new_resolver("convtrain_task_dir", task_run_dir, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=TrainConfig)
    for group, schemas in (("optimizer", OPTIMIZER_SCHEMAS), ("scheduler", SCHEDULER_SCHEMAS)):
        for name, node in schemas.items():
            cs.store(name=schema_name(group, name), node=node)
