"""The typed config schema, registered with Hydra's ConfigStore.

``configs/train.yaml`` starts its defaults list with ``schema``, so every composed config is
merged into :class:`TrainConfig`: a wrong type (``trainer.max_epochs=abc``) or an unknown key
(``trainer.max_epoch=3``) fails during composition, before any data is loaded, with the full key
named (the CLI adds a "did you mean" for typos, see :mod:`convtrain.app.hydra_errors`).

Optimizers and schedules take different keys, so each one has its own dataclass, stored in the
``optimizer`` / ``scheduler`` group as ``schema_<name>`` and pulled in by the defaults list of
``configs/optimizer/<name>.yaml`` (Hydra's "config group schema" pattern). Their fields mirror
the registries' ``options`` (a test keeps them in sync).

The schema checks types and key names only. Ranges (``optimizer.lr > 0``), ``+key=`` additions
(which Hydra lets past the schema on purpose) and per-layer keys are checked by the registries,
all before data loading (:mod:`convtrain.app.preflight`).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from convtrain.training.options import TrainerOptions
from convtrain.visuals.settings import LoggerSettings


class BackendName(enum.Enum):
    numpy = "numpy"
    cupy = "cupy"


class DType(enum.Enum):
    float32 = "float32"
    float64 = "float64"


class Task(enum.Enum):
    train = "train"
    summary = "summary"


@dataclasses.dataclass
class BackendConfig:
    name: BackendName = BackendName.numpy
    dtype: DType = DType.float32


@dataclasses.dataclass
class ModelConfig:
    """``layers`` maps layer names to ``{type: <registered layer>, ...}`` (checked per type by
    the layer registry); ``init`` is the default initializer of conv/dense layers."""

    name: Optional[str] = None
    init: str = "he_normal"
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


# --- optimizers (defaults are PyTorch's, as in convtrain.optim) ------------------------------
@dataclasses.dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclasses.dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: List[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclasses.dataclass
class AdamWConfig(AdamConfig):
    name: str = "adamw"
    weight_decay: float = 0.01


@dataclasses.dataclass
class RMSpropConfig:
    name: str = "rmsprop"
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0
    weight_decay: float = 0.0


# --- learning-rate schedules ------------------------------------------------------------------
@dataclasses.dataclass
class ConstantConfig:
    name: str = "constant"
    warmup_epochs: int = 0


@dataclasses.dataclass
class StepConfig:
    name: str = "step"
    step_size: int = 10
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclasses.dataclass
class MultiStepConfig:
    name: str = "multistep"
    milestones: List[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclasses.dataclass
class ExponentialConfig:
    name: str = "exponential"
    gamma: float = 0.95
    warmup_epochs: int = 0


@dataclasses.dataclass
class CosineConfig:
    name: str = "cosine"
    t_max: Optional[int] = None  # default: trainer.max_epochs
    eta_min: float = 0.0
    warmup_epochs: int = 0


#: ``optimizer`` / ``scheduler`` group schemas by registry name (stored as ``schema_<name>``).
OPTIMIZER_SCHEMAS: Dict[str, type] = {"sgd": SGDConfig, "adam": AdamConfig, "adamw": AdamWConfig,
                                      "rmsprop": RMSpropConfig}
SCHEDULER_SCHEMAS: Dict[str, type] = {"constant": ConstantConfig, "step": StepConfig,
                                      "multistep": MultiStepConfig,
                                      "exponential": ExponentialConfig, "cosine": CosineConfig}


@dataclasses.dataclass
class EngineConfig:
    """Process-wide settings of the NumPy engine (see benchmarks/RESULTS.md for their effect)."""

    max_workspace_mb: Optional[float] = 256.0  # conv scratch cap; larger batches run in chunks; null = no cap
    num_threads: int = 2  # threads for copies/elementwise work (1 = off); BLAS keeps its own
    keep_freed_memory: bool = True  # glibc keeps freed memory: no page faults per step, RSS stays at peak
    pin_threads: bool = True  # pin engine threads to CPUs when the process has exactly num_threads CPUs


@dataclasses.dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    # Any: the concrete dataclass comes with the chosen group option (schema_sgd, ...); a typed
    # default here would make every other option's dataclass a merge error.
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    backend: BackendConfig = dataclasses.field(default_factory=BackendConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    engine: EngineConfig = dataclasses.field(default_factory=EngineConfig)
    task: Task = Task.train
    seed: int = 0


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent: re-storing replaces)."""
    cs = ConfigStore.instance()
    cs.store(name="schema", node=TrainConfig)
    for name, node in OPTIMIZER_SCHEMAS.items():
        cs.store(group="optimizer", name=f"schema_{name}", node=node)
    for name, node in SCHEDULER_SCHEMAS.items():
        cs.store(group="scheduler", name=f"schema_{name}", node=node)
