"""Resuming: restore a run's state from a checkpoint, after checking that it may continue.

:func:`restore` loads model, optimizer, counters, best/totals and rng states (what
:func:`convtrain.training.checkpointing.run_record` wrote), so a run resumed from epoch k
reproduces an uninterrupted one bit for bit on the NumPy backend.

It refuses (ConfigError) a checkpoint of another optimizer, one that already completed
``trainer.max_epochs``, and one trained on other data: a different ``seed``, ``data.name``,
``data.subset``, ``data.val_fraction`` or ``data.normalize`` (or other normalisation
statistics), since another validation split could contain images the checkpoint was trained
on. A schedule that differs from the checkpoint's (e.g. cosine's default ``t_max`` following a
raised ``trainer.max_epochs``) is followed, with a warning naming the key.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from convtrain.errors import ConfigError
from convtrain.training.checkpoint import Checkpoint, load_checkpoint
from convtrain.training.checkpointing import data_identity, layer_rngs, optimizer_name, \
    resolved_schedule
from convtrain.training.hooks import Best, TrainState, Totals

log = logging.getLogger("convtrain")

#: keys a resumed run must share with its checkpoint (first difference reported) -> why
_RESUME_KEYS = {
    "data.name": "continue training on another dataset",
    "seed": "draw another validation split (and data.subset), which could contain images the "
            "checkpoint was trained on",
    "data.subset": "draw other training and validation samples, so the validation split could "
                   "contain images the checkpoint was trained on",
    "data.val_fraction": "draw another validation split, which could contain images the "
                         "checkpoint was trained on",
    "data.normalize": "feed the model inputs on another scale than it was trained on",
}


def _cli(value: Any) -> str:
    """``value`` as written in a command-line override."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def restore(state: TrainState, path: str | Path) -> int:
    """Fill ``state`` (model, optimizer, counters, rng states) from the checkpoint at ``path``
    (a file, or a run / checkpoints directory meaning its ``last``); return the epochs it
    completed, where training continues.

    Raises:
        ConfigError: naming the checkpoint and what differs, when it cannot be continued.
    """
    ckpt = load_checkpoint(path)
    where = _where(ckpt)
    epoch, global_step, shuffle_state, layer_states = _header(ckpt, where)
    _check_optimizer_and_epochs(ckpt, state.optimizer, state.max_epochs, where)
    _check_same_data(state, ckpt.meta, where)
    _compare_schedule(state.schedule, ckpt.meta.get("schedule"), epoch, where)
    _load_weights(ckpt, state.model, state.optimizer, where)
    _set_rng_state(state.shuffle_rng, shuffle_state, f"{where}: the shuffle order's")
    _restore_layer_rngs(state.model, layer_states, where)
    meta = ckpt.meta
    if meta.get("monitor") == state.monitor and isinstance(meta.get("best"), dict):
        state.best = Best(**meta["best"])
    else:
        log.warning("%s: monitored metric changed from %s to %s; best is tracked anew",
                    where, meta.get("monitor"), state.monitor)
    state.totals = Totals(**meta.get("totals", {}))
    state.global_step = global_step
    log.info("resumed from %s after epoch %d (global step %d)", ckpt.path, epoch, global_step)
    return epoch


def check_resumable(ckpt: Checkpoint, model: Any, optimizer: Any, max_epochs: int) -> None:
    """The checks of :func:`restore` that need no data: the header, the optimizer, the epochs
    still to train, and the model's tensor names, shapes and dtypes. Loads the checkpoint's
    weights and optimizer state into ``model`` and ``optimizer`` (restore loads them again).

    Raises:
        ConfigError: the same one line :func:`restore` gives for these checks.
    """
    where = _where(ckpt)
    _header(ckpt, where)
    _check_optimizer_and_epochs(ckpt, optimizer, max_epochs, where)
    _load_weights(ckpt, model, optimizer, where)


def _where(ckpt: Checkpoint) -> str:
    return f"resume '{ckpt.path}'"


def _header(ckpt: Checkpoint, where: str) -> tuple[int, int, Any, Mapping[str, Any]]:
    """``(epoch, global_step, shuffle rng state, layer rng states)`` from the header."""
    meta = ckpt.meta
    try:
        return (int(meta["epoch"]), int(meta["global_step"]), meta["rng"]["shuffle"],
                meta["rng"].get("layers", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: checkpoint metadata lacks {exc}") from None


def _check_optimizer_and_epochs(ckpt: Checkpoint, optimizer: Any, max_epochs: int,
                                where: str) -> None:
    saved_optimizer = ckpt.meta.get("optimizer")
    if saved_optimizer is None:
        raise ConfigError(f"{where}: checkpoint metadata lacks 'optimizer'")
    own_optimizer = optimizer_name(optimizer)
    if saved_optimizer != own_optimizer:
        raise ConfigError(f"{where}: the checkpoint was trained with optimizer "
                          f"'{saved_optimizer}', this run uses '{own_optimizer}' "
                          f"(set optimizer={saved_optimizer})")
    epoch = int(ckpt.meta["epoch"])
    if epoch >= max_epochs:
        raise ConfigError(f"{where}: the checkpoint already completed {epoch} epochs; "
                          f"set trainer.max_epochs above {epoch} to train further")


def _load_weights(ckpt: Checkpoint, model: Any, optimizer: Any, where: str) -> None:
    """Model tensors (names, shapes, dtypes) and optimizer state, each checked on load."""
    _check_dtypes(model, ckpt.model_state, where)
    try:
        model.load_state_dict(ckpt.model_state, strict=True)
        _check_optimizer_coverage(optimizer, ckpt.optimizer_state)
        optimizer.load_state_dict(ckpt.optimizer_state)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _check_dtypes(model: Any, model_state: Mapping[str, np.ndarray], where: str) -> None:
    """A floating-point tensor of the model must come as floating point from the checkpoint
    (names and shapes are the model's own load check)."""
    for name, value in model.state_dict().items():
        saved = model_state.get(name)
        if saved is not None and np.asarray(value).dtype.kind == "f" and saved.dtype.kind != "f":
            raise ConfigError(f"{where}: model.{name} has dtype {saved.dtype} in the checkpoint, "
                              f"the model holds {np.asarray(value).dtype}")


def _check_optimizer_coverage(optimizer: Any,
                              optimizer_state: Mapping[str, np.ndarray]) -> None:
    """Once the optimizer has stepped, every trainable parameter has its state (at least its
    ``step``); the optimizer's own load checks names, slots and shapes."""
    steps = optimizer_state.get("steps")
    if steps is None or int(steps) == 0:
        return
    for name, _, _ in optimizer.trainable_parameters():
        if f"{name}/step" not in optimizer_state:
            raise ConfigError(f"optimizer/{name}/step is missing: the checkpoint's optimizer "
                              f"took {int(steps)} steps but kept no state for the trainable "
                              f"parameter '{name}'")


def _restore_layer_rngs(model: Any, layer_states: Mapping[str, Any], where: str) -> None:
    """Put the saved NumPy bit-generator states back into the layers' generators.

    A generator of another kind (CuPy's: its ``bit_generator.state`` is a method, not a NumPy
    state dict) cannot take a NumPy state: its masks start anew, with a warning, as they do
    when such a run is saved.
    """
    rngs = layer_rngs(model)
    for layer_name, saved in layer_states.items():
        if layer_name not in rngs:
            raise ConfigError(f"{where}: the checkpoint has an rng state for layer "
                              f"'{layer_name}', which this model has no rng for")
        rng = rngs[layer_name]
        if isinstance(rng, np.random.Generator):
            _set_rng_state(rng, saved, f"{where}: layer '{layer_name}'s")
        else:
            log.warning("%s: layer '%s' draws with a %s rng, which cannot take the saved NumPy "
                        "rng state; its random masks will differ from an uninterrupted run",
                        where, layer_name, type(rng).__name__)


def _set_rng_state(rng: np.random.Generator, saved: Any, whose: str) -> None:
    """``rng``'s state from the checkpoint; a state of another bit generator (or a damaged
    one) is a bad checkpoint, reported in one line naming it."""
    try:
        rng.bit_generator.state = saved
    except (TypeError, ValueError, KeyError) as exc:
        raise ConfigError(f"{whose} rng state in the checkpoint does not fit its NumPy "
                          f"{type(rng.bit_generator).__name__} generator ({exc})") from None


def _check_same_data(state: TrainState, meta: Mapping[str, Any], where: str) -> None:
    """Refuse to resume on other splits than the checkpoint was trained on."""
    own = data_identity(state.data)
    saved = meta.get("data")
    if not isinstance(saved, dict):
        log.warning("%s: the checkpoint predates data records; cannot check that this run "
                    "(data %s) trains on the same training/validation split", where,
                    {k: v for k, v in own.items() if k != "normalization"})
        saved = {}
    flat_own = {"seed": state.seed, **{f"data.{k}": v for k, v in own.items()}}
    flat_saved = {"seed": meta.get("seed"), **{f"data.{k}": v for k, v in saved.items()}}
    for key, reason in _RESUME_KEYS.items():
        if key in flat_saved and key in flat_own and flat_saved[key] != flat_own[key]:
            raise ConfigError(
                f"{key}: the checkpoint was trained with {key}={_cli(flat_saved[key])}, "
                f"this run has {key}={_cli(flat_own[key])}; resuming with a different "
                f"{key} would {reason} ({where}; set {key}={_cli(flat_saved[key])}, or "
                f"train from scratch without trainer.resume)")
    stats, own_stats = saved.get("normalization"), own.get("normalization")
    if isinstance(stats, dict) and own_stats is not None and not all(
            np.allclose(stats[k], own_stats[k], rtol=1e-6, atol=0) for k in ("mean", "std")):
        raise ConfigError(
            f"data: the training split's normalisation statistics (mean {own_stats['mean']}, "
            f"std {own_stats['std']}) differ from the checkpoint's (mean {stats['mean']}, "
            f"std {stats['std']}) although seed and data settings match, so the dataset "
            f"files differ (check data.root) ({where})")


def _compare_schedule(schedule: Any, saved: Any, epoch: int, where: str) -> None:
    """Warn when this run's lr curve differs from the checkpoint's (it is followed)."""
    own = resolved_schedule(schedule)
    if not isinstance(saved, dict) or own is None or saved == own:
        return
    derived = getattr(schedule, "derived", {})
    changes = []
    for key in sorted(set(saved) | set(own)):
        if saved.get(key) != own.get(key):
            name = "optimizer.lr" if key == "base_lr" else f"scheduler.{key}"
            note = f" (unset, so it follows {derived[key]})" if key in derived else ""
            changes.append(f"{name}={saved.get(key)!r} -> {own.get(key)!r}{note}")
    keep = [f"scheduler.{k}={saved[k]!r}" for k in derived
            if k in saved and saved[k] != own.get(k)]
    log.warning("%s: this run's learning-rate schedule differs from the checkpoint's: %s; "
                "epochs from %d on follow this run's schedule (lr %.4g)%s", where,
                ", ".join(changes), epoch + 1, schedule.lr_at(epoch),
                f"; set {' '.join(keep)} to continue the checkpoint's curve" if keep else "")
