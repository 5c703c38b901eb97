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
from convtrain.training.atomic import os_error_line
from convtrain.training.checkpoint import save_checkpoint
from convtrain.training.hooks import Hook, TrainState
from convtrain.training.interrupts import TrainingInterrupted
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


def input_record(data: Any) -> dict[str, Any] | None:
    """What a trained model needs to be used on new inputs: the per-sample shape, the class
    names and the preprocessing (``convtrain.load_run`` reads it back); None when ``data`` is
    not a :class:`~convtrain.data.splits.DataSplits`."""
    preprocessing = getattr(data, "preprocessing", None)
    if preprocessing is None:
        return None
    return {"shape": [int(d) for d in data.input_shape],
            "class_names": [str(name) for name in data.class_names],
            **preprocessing.as_dict()}


def optimizer_name(optimizer: Any) -> str:
    return getattr(optimizer, "name", type(optimizer).__name__)


def resolved_schedule(schedule: Any) -> dict[str, Any] | None:
    """The schedule's settings with derived values filled in (compared on resume)."""
    resolved = getattr(schedule, "resolved", None)
    return json_safe(resolved()) if callable(resolved) else None


def run_record(state: TrainState, config_text: str | None,
               epoch: int | None = None) -> dict[str, Any]:
    """The checkpoint metadata of the epoch ``state`` has just completed (``epoch``: the
    epochs completed, when ``state`` is not at the end of one, e.g. at the start of training)."""
    rng_states = {}
    for layer_name, rng in layer_rngs(state.model).items():
        if isinstance(rng, np.random.Generator):
            rng_states[layer_name] = rng.bit_generator.state
        else:
            log.warning("layer '%s': cannot save the state of its %s rng; a resumed run "
                        "will not reproduce its random masks exactly", layer_name,
                        type(rng).__name__)
    return {
        "epoch": state.epoch + 1 if epoch is None else epoch,
        "global_step": state.global_step,
        "metrics": json_safe(state.metrics),
        "monitor": state.monitor,
        "best": json_safe(dataclasses.asdict(state.best)),
        "totals": dataclasses.asdict(state.totals),
        "rng": {"shuffle": state.shuffle_rng.bit_generator.state, "layers": rng_states},
        "optimizer": optimizer_name(state.optimizer),
        "seed": state.seed,
        "data": json_safe(data_identity(state.data)),
        "inputs": input_record(state.data),
        "schedule": resolved_schedule(state.schedule),
        "config": config_text,
        "convtrain_version": convtrain.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class CheckpointHook(Hook):
    """``checkpoints/last`` every epoch; ``checkpoints/best`` too when the monitored metric
    improved. Runs before ``metrics.json`` is written (the checkpoints are what a resume
    needs; ``metrics.json`` of the same epoch follows them).

    When training is interrupted (:class:`~convtrain.training.interrupts.TrainingInterrupted`)
    before this run directory has a ``last`` of this run, the state from the start of training
    (kept in memory until the first epoch ends) is written as ``last``, so every interrupted
    run can be resumed and replays its interrupted epoch from the start.

    Attributes:
        saved: ``(epoch, global_step)`` held by this run directory's ``last``, None before one
            is written (or found: resuming from this directory's own ``last``).
        save_error: why the ``last`` written on the way out of an interrupted run could not be
            written (``cannot write PATH: No space left on device``), else None.
    """

    def __init__(self, config_text: str | None):
        self.config_text = config_text
        self.saved: tuple[int, int] | None = None
        self.save_error: str | None = None
        self._start: tuple[dict, dict, dict] | None = None

    def on_fit_start(self, state: TrainState) -> None:
        self.saved, self._start, self.save_error = None, None, None
        last = state.run_dir / "checkpoints" / "last.safetensors"
        if state.resumed_from is not None and last.is_file() \
                and state.resumed_from.resolve() == last.resolve():
            self.saved = (state.start_epoch, state.global_step)
            return
        # host copies: training changes the live arrays in place
        self._start = (state.model.state_dict(), state.optimizer.state_dict(),
                       run_record(state, self.config_text, epoch=state.start_epoch))

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
        self.saved, self._start = (meta["epoch"], meta["global_step"]), None

    def on_fit_end(self, state: TrainState, error: BaseException | None) -> None:
        start, self._start = self._start, None
        if isinstance(error, TrainingInterrupted) and start is not None:
            model_state, optimizer_state, meta = start
            try:
                save_checkpoint(state.run_dir / "checkpoints", "last", model_state,
                                optimizer_state, meta)
            except OSError as exc:
                # a full disk: the interrupt's one line says why there is nothing to resume
                self.save_error = os_error_line(exc)
                return
            self.saved = (meta["epoch"], meta["global_step"])
