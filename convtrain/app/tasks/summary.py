"""``task=summary``: print the model table (shapes, parameters, FLOPs, receptive field) and exit.

Needs no data files when the dataset declares its input shape (every shipped one does)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from convtrain.app import preflight
from convtrain.app.tasks import register_task


@register_task("summary")
def summary(cfg: DictConfig, plan: preflight.Plan, run_dir: Path) -> None:
    declared = cfg.model.get("input_shape")  # a model drawn for one size (seed_example)
    shape = tuple(int(d) for d in declared) if declared is not None else plan.input_shape
    if shape is None:  # a dataset without a declared shape: read it to learn the shape
        from convtrain.data import load_dataset  # noqa: PLC0415

        shape = tuple(load_dataset(plan.data, seed=plan.seed).input_shape)
    print(preflight.build(cfg, plan, shape).model.summary())
    return None
