"""The hook that writes ``checkpoints/last`` after every epoch and ``best`` when it improves,
and what a checkpoint records about the run (read back by :mod:`convtrain.training.resume`).

The file format itself (safetensors + JSON metadata, atomic writes) is
:mod:`convtrain.training.checkpoint`'s business.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

import convtrain
from convtrain.training.checkpoint import save_checkpoint
from convtrain.training.hooks import Hook, TrainState
from convtrain.training.metrics import json_safe

log = logging.getLogger("convtrain")


def layer_rngs(model: Any) -> dict[str, Any]:
    """Layers' random generators (dropout masks) whose state a checkpoint must carry."""
    return {name: layer.rng for name, layer in (getattr(model, "layers", None) or {}).items()
            if getattr(layer, "rng", None) is not None}


def data_identity(data: Any) -> dict[str, Any]:
    """What decides the splits' contents (``DataSplits.identity()``; just the name otherwise)."""
    identity = getattr(data, "identity", None)
    return identity() if callable(identity) else {"name": getattr(data, "name", None)}


def optimizer_name(optimizer: Any) -> str:
    return getattr(optimizer, "name", type(optimizer).__name__)


def resolved_schedule(schedule: Any) -> dict[str, Any] | None:
    """The schedule's settings with derived values filled in (compared on resume)."""
    resolved = getattr(schedule, "resolved", None)
    return json_safe(resolved()) if callable(resolved) else None


def run_record(state: TrainState, config_text: str | None) -> dict[str, Any]:
    """The checkpoint metadata of the epoch ``state`` has just completed."""
    rng_states = {}
    for layer_name, rng in layer_rngs(state.model).items():
        if isinstance(rng, np.random.Generator):
            rng_states[layer_name] = rng.bit_generator.state
        else:
            log.warning("layer '%s': cannot save the state of its %s rng; a resumed run "
                        "will not reproduce its random masks exactly", layer_name,
                        type(rng).__name__)
    return {
        "epoch": state.epoch + 1,
        "global_step": state.global_step,
        "metrics": json_safe(state.metrics),
        "monitor": state.monitor,
        "best": json_safe(dataclasses.asdict(state.best)),
        "totals": dataclasses.asdict(state.totals),
        "rng": {"shuffle": state.shuffle_rng.bit_generator.state, "layers": rng_states},
        "optimizer": optimizer_name(state.optimizer),
        "seed": state.seed,
        "data": json_safe(data_identity(state.data)),
        "schedule": resolved_schedule(state.schedule),
        "config": config_text,
        "convtrain_version": convtrain.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class CheckpointHook(Hook):
    """``checkpoints/last`` every epoch; ``checkpoints/best`` too when the monitored metric
    improved. Runs before ``metrics.json`` is written (the checkpoints are what a resume
    needs; ``metrics.json`` of the same epoch follows them)."""

    def __init__(self, config_text: str | None):
        self.config_text = config_text

    def on_epoch_end(self, state: TrainState) -> None:
        # best before last: a crash in between must not leave `last` (what a resume reads)
        # pointing at a best epoch whose file was never written
        names = ("best", "last") if state.improved else ("last",)
        meta = run_record(state, self.config_text)
        # copied to the host once for both files
        model_state, optimizer_state = state.model.state_dict(), state.optimizer.state_dict()
        for name in names:
            save_checkpoint(state.run_dir / "checkpoints", name, model_state, optimizer_state,
                            meta)
