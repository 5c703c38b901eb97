"""One run: compose the pieces named by a config and train (or print the summary).

Kept apart from the CLI so tests and notebooks can call :func:`run` with a config built by
Hydra's compose API.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from convtrain.backend import get_backend
from convtrain.errors import ConfigError

log = logging.getLogger("convtrain")

_PROGRESS = {"auto": "auto", "true": True, "false": False}


def _progress_setting(value: Any) -> Any:
    key = str(value).strip().lower()
    if key not in _PROGRESS:
        raise ConfigError(f"trainer.progress: expected auto, true or false, got {value!r}")
    return _PROGRESS[key]


def run(cfg: DictConfig, *, run_dir: Path) -> float | None:
    """Train (``task=train``) or print the model summary (``task=summary``).

    Returns the final validation accuracy (what Hydra sweepers optimise), or None for summary.
    """
    from convtrain.data import load_dataset  # noqa: PLC0415
    from convtrain.model import build_model  # noqa: PLC0415

    task = cfg.task.value if hasattr(cfg.task, "value") else str(cfg.task)
    backend = get_backend(cfg.backend.name.value if hasattr(cfg.backend.name, "value") else str(cfg.backend.name))
    dtype = np.dtype(cfg.backend.dtype.value if hasattr(cfg.backend.dtype, "value") else str(cfg.backend.dtype))
    seed = int(cfg.seed)

    data_cfg = OmegaConf.to_container(cfg.data, resolve=True)
    augment = data_cfg.pop("augment", None)  # applied per batch by the loader, not at load time
    data = load_dataset(data_cfg, seed=seed)
    model = build_model(cfg.model, data.input_shape, seed=seed, dtype=dtype, backend=backend)
    summary = model.summary()
    if task == "summary":
        print(summary)
        return None
    log.info("model:\n%s", summary)
    log.info("data: %s train / %s val / %s test images of shape %s, %s classes",
             len(data.train), len(data.val), len(data.test), data.input_shape, data.num_classes)

    from convtrain.optim import build_optimizer, build_schedule  # noqa: PLC0415
    from convtrain.training.trainer import Trainer  # noqa: PLC0415

    optimizer = build_optimizer(cfg.optimizer, model)
    schedule = build_schedule(cfg.scheduler, base_lr=optimizer.lr, max_epochs=int(cfg.trainer.max_epochs))
    t = cfg.trainer
    trainer = Trainer(
        model, optimizer, schedule, data,
        run_dir=run_dir, backend=backend, seed=seed,
        max_epochs=int(t.max_epochs), batch_size=int(t.batch_size),
        eval_batch_size=None if t.eval_batch_size is None else int(t.eval_batch_size),
        progress=_progress_setting(t.progress), log_every_n_steps=int(t.log_every_n_steps),
        checkpoint=bool(t.checkpoint), monitor=str(t.monitor), resume=t.resume,
        config_text=OmegaConf.to_yaml(cfg), augment=augment,
        logger=OmegaConf.to_container(cfg.logger, resolve=True),
    )
    metrics = trainer.fit()
    test_acc = metrics.get("test_accuracy")
    print(f"final test accuracy: {test_acc:.4f}" if test_acc is not None else "no test split")
    print(f"run directory: {run_dir}")
    val = metrics.get("val_accuracy")
    return float(val) if val is not None else None
