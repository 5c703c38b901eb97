"""The typed config schema, registered with Hydra's ConfigStore.

``configs/train.yaml`` starts its defaults list with ``schema``, so every composed config is
merged into :class:`TrainConfig`: a wrong type (``trainer.max_epochs=abc``) or an unknown key
(``trainer.max_epoch=3``) fails during composition, before any data is loaded, with Hydra's
message naming the full key.

Groups whose keys depend on a registry entry (``model.layers.*``, ``optimizer``,
``scheduler``) are free-form here and validated by their registries when built (layer
classes, optimizers and schedules each declare the keys they accept).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
class DataConfig:
    name: str = MISSING
    val_fraction: float = 0.1
    normalize: bool = True
    root: Optional[str] = None
    download: bool = False
    mirror: Optional[str] = None
    subset: Optional[int] = None
    augment: Optional[Dict[str, Any]] = None


@dataclasses.dataclass
class TrainerConfig:
    max_epochs: int = 30
    batch_size: int = 32
    eval_batch_size: Optional[int] = None
    progress: str = "auto"
    log_every_n_steps: int = 50
    checkpoint: bool = True
    monitor: str = "val_accuracy"
    resume: Optional[str] = None


@dataclasses.dataclass
class LoggerConfig:
    """What the run logs to TensorBoard (``run_dir/tensorboard``) and as PNGs (``run_dir/images``)."""

    tensorboard: bool = True
    kernels_every_n_epochs: int = 1  # filter grids of every conv layer; 0 = never
    kernel_scaling: str = "per_filter"  # per_filter | symmetric
    feature_maps_every_n_epochs: int = 1  # one fixed validation image through each conv layer
    histograms_every_n_epochs: int = 1  # weights and gradients per layer
    png: bool = True  # also write kernel / feature-map grids as PNG files
    hparams: bool = True  # flattened config + final metrics for the HParams dashboard


@dataclasses.dataclass
class TrainConfig:
    model: Any = MISSING
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optimizer: Any = MISSING
    scheduler: Any = dataclasses.field(default_factory=lambda: {"name": "constant"})
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    backend: BackendConfig = dataclasses.field(default_factory=BackendConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    task: Task = Task.train
    seed: int = 0


def register_configs() -> None:
    """Store the schema under the name ``schema`` (idempotent)."""
    ConfigStore.instance().store(name="schema", node=TrainConfig)
