"""Checkpoints: model + optimizer state in one safetensors file, metadata as JSON.

Layout of ``<dir>/<name>.safetensors`` (safe format: no pickle, loadable by any safetensors
reader, e.g. ``safetensors.torch.load_file``):

- model ``state_dict`` entries under their own names (``"conv1.weight"``), so the file doubles
  as a plain weights file;
- optimizer state under ``"optimizer/<param>/<slot>"`` and ``"optimizer/steps"``;
- the metadata (epoch, global step, metrics, rng states, config text, version) as JSON in the
  safetensors header under ``"convtrain"``. The header copy is authoritative: it is written in
  the same atomic replace as the arrays, so arrays and metadata can never disagree.

``<dir>/<name>.json`` is a human-readable copy of the metadata, also written atomically.

:func:`load_checkpoint` checks what it reads before anyone trains on it (:func:`validate`): a
damaged or hand-edited file is refused in one line naming the file and the field -- a tensor
holding NaN or inf, a step count that is not a non-negative integer, an optimizer entry for a tensor the model lacks, a
parameter with optimizer slots but no ``step`` (or other slots than its siblings), an
``epoch`` or ``global_step`` that is not a non-negative integer, an rng state that is not a
NumPy bit-generator state. Header fields it does not know are left alone.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import safetensors.numpy

from convtrain.errors import ConfigError, InternalError
from convtrain.training.atomic import atomic_write_bytes, atomic_write_text

#: written into every checkpoint; bump when the layout changes incompatibly.
CHECKPOINT_FORMAT = "convtrain-checkpoint/1"
_META_KEY = "convtrain"
_OPTIMIZER_PREFIX = "optimizer/"


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: the ``.safetensors`` file it came from.
        model_state: model ``state_dict`` (host NumPy arrays).
        optimizer_state: optimizer ``state_dict`` (keys without the ``optimizer/`` prefix).
        meta: the metadata dict (``epoch``, ``global_step``, ``metrics``, ``rng``, ...).
    """

    path: Path
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    meta: dict[str, Any]


def save_checkpoint(directory: str | os.PathLike, name: str,
                    model_state: Mapping[str, np.ndarray],
                    optimizer_state: Mapping[str, np.ndarray],
                    meta: Mapping[str, Any]) -> Path:
    """Atomically write ``<directory>/<name>.safetensors`` and ``<name>.json``.

    Returns:
        the path of the ``.safetensors`` file.
    """
    directory = Path(directory)
    tensors: dict[str, np.ndarray] = {}
    for key, value in model_state.items():
        if key.startswith(_OPTIMIZER_PREFIX):
            raise InternalError(f"model state key '{key}' collides with the optimizer prefix")
        tensors[key] = np.asarray(value, order="C")
    for key, value in optimizer_state.items():
        tensors[_OPTIMIZER_PREFIX + key] = np.asarray(value, order="C")
    meta = {"format": CHECKPOINT_FORMAT, **meta}
    meta_json = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False)
    blob = safetensors.numpy.save(tensors, metadata={_META_KEY: meta_json})
    path = directory / f"{name}.safetensors"
    atomic_write_bytes(path, blob)
    atomic_write_text(directory / f"{name}.json", meta_json + "\n")
    return path


def run_directory(path: str | os.PathLike) -> Path:
    """The run directory that ``path`` names or belongs to (nothing needs to exist): a
    checkpoint file ``<run>/checkpoints/<name>.safetensors`` (or its ``.json``) -> ``<run>``;
    a ``checkpoints/`` folder -> its parent; a checkpoint file elsewhere -> its folder; any
    other folder -> itself."""
    p = Path(path).expanduser()
    if p.is_file() or p.suffix in (".safetensors", ".json"):
        p = p.parent
    return p.parent if p.name == "checkpoints" else p


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """The ``.safetensors`` file meant by ``path``.

    Accepts the file itself, its ``.json`` sibling, the stem (``.../last``), a ``checkpoints/``
    directory or a run directory (both meaning ``last``).

    Raises:
        ConfigError: naming ``path`` when no checkpoint is found there.
    """
    p = Path(path).expanduser()
    candidates = [p]
    if p.suffix == ".json":
        candidates = [p.with_suffix(".safetensors")]
    elif p.is_dir():
        candidates = [p / "last.safetensors", p / "checkpoints" / "last.safetensors"]
    elif p.suffix != ".safetensors":
        candidates = [p.with_name(p.name + ".safetensors")]
    for c in candidates:
        if c.is_file():
            return c
    raise ConfigError(
        f"checkpoint not found: '{path}' (expected a .safetensors file written by convtrain, "
        f"its .json sibling, a checkpoints/ directory or a run directory; looked for "
        f"{', '.join(str(c) for c in candidates)})"
    )


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        ConfigError: naming the file when it is missing, unreadable, truncated or corrupt, or
            not a convtrain checkpoint.
    """
    file = resolve_checkpoint_path(path)
    try:
        data = file.read_bytes()
        tensors = safetensors.numpy.load(data)
        header = _header_metadata(data)
    except Exception as exc:  # safetensors raises its own error type, OSError, ValueError...
        raise ConfigError(
            f"checkpoint '{file}' is corrupt or unreadable ({type(exc).__name__}: {exc})"
        ) from None
    if _META_KEY not in header:
        raise ConfigError(
            f"checkpoint '{file}' is a safetensors file but not a convtrain checkpoint "
            f"(no '{_META_KEY}' metadata)"
        )
    try:
        meta = json.loads(header[_META_KEY])
    except json.JSONDecodeError as exc:
        raise ConfigError(f"checkpoint '{file}' has corrupt metadata: {exc}") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if found != CHECKPOINT_FORMAT:
        raise ConfigError(
            f"checkpoint '{file}' has format {found!r}, this convtrain reads {CHECKPOINT_FORMAT!r}"
        )
    model_state = {k: v for k, v in tensors.items() if not k.startswith(_OPTIMIZER_PREFIX)}
    optimizer_state = {k[len(_OPTIMIZER_PREFIX):]: v for k, v in tensors.items()
                       if k.startswith(_OPTIMIZER_PREFIX)}
    checkpoint = Checkpoint(file, model_state, optimizer_state, meta)
    validate(checkpoint)
    return checkpoint


def validate(ckpt: Checkpoint) -> None:
    """Refuse a checkpoint whose content cannot be what :func:`save_checkpoint` wrote for a
    training run (see the module docstring); extra header fields are fine.

    Raises:
        ConfigError: ``checkpoint '<file>': <field> ...``, one line.
    """
    where = f"checkpoint '{ckpt.path}'"
    for prefix, state in (("model.", ckpt.model_state), (_OPTIMIZER_PREFIX, ckpt.optimizer_state)):
        for name, value in state.items():
            _check_finite(where, f"{prefix}{name}", value)
    _check_optimizer_state(where, ckpt.optimizer_state, ckpt.model_state)
    _check_header(where, ckpt.meta)


def _check_finite(where: str, field: str, value: np.ndarray) -> None:
    if value.dtype.kind == "f" and not np.isfinite(value).all():
        nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        held = " and ".join(f"{what} ({count} of {value.size} values)"
                            for what, count in (("NaN", nan), ("inf", inf)) if count)
        raise ConfigError(f"{where}: {field} holds {held}; the run it came from had diverged "
                          "or the file was damaged, so training cannot continue from it")


def _check_counter(where: str, field: str, value: np.ndarray) -> int:
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise ConfigError(f"{where}: {field} must be a non-negative integer scalar, got "
                          f"dtype {value.dtype} shape {tuple(value.shape)}")
    return int(value)


def _check_optimizer_state(where: str, state: Mapping[str, np.ndarray],
                           model_state: Mapping[str, np.ndarray]) -> None:
    """Entries ``steps`` and ``<param>/<slot>``: each parameter is a model tensor, has a
    ``step`` no larger than ``steps``, and the same slots as every other parameter."""
    if not state:
        return
    if "steps" not in state:
        raise ConfigError(f"{where}: the optimizer state lacks its step count "
                          f"'{_OPTIMIZER_PREFIX}steps'")
    steps = _check_counter(where, f"{_OPTIMIZER_PREFIX}steps", state["steps"])
    slots: dict[str, set[str]] = {}
    for key in state:
        if key == "steps":
            continue
        name, _, slot = key.rpartition("/")
        if not name or not slot:
            raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{key} is not an optimizer entry "
                              "(expected optimizer/<parameter>/<slot>)")
        if name not in model_state:
            raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{key} belongs to no tensor of the "
                              "checkpoint's model")
        slots.setdefault(name, set()).add(slot)
    for name, found in slots.items():
        if "step" not in found:
            raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{name}/step is missing (parameter "
                              f"'{name}' has optimizer state {', '.join(sorted(found))} but "
                              "no step count)")
        step = _check_counter(where, f"{_OPTIMIZER_PREFIX}{name}/step", state[f"{name}/step"])
        if step > steps:
            raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{name}/step is {step}, more than "
                              f"the optimizer's {_OPTIMIZER_PREFIX}steps {steps}")
        for slot in sorted(found - {"step"}):
            shape, expected = state[f"{name}/{slot}"].shape, model_state[name].shape
            if shape != expected:
                raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{name}/{slot} has shape "
                                  f"{tuple(shape)}, the tensor model.{name} has {tuple(expected)}")
    if not slots:  # no step taken yet (a run stopped in its first epoch): nothing to compare
        return
    reference_name, reference = max(slots.items(), key=lambda item: len(item[1]))
    for name, found in slots.items():
        if found != reference:
            missing = sorted(reference - found)
            raise ConfigError(f"{where}: {_OPTIMIZER_PREFIX}{name}/{missing[0]} is missing "
                              f"(parameter '{reference_name}' has it; every parameter keeps "
                              "the same optimizer state)")


def _header_int(where: str, meta: Mapping[str, Any], key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        what = "missing" if key not in meta else f"{value!r}"
        raise ConfigError(f"{where}: header field '{key}' must be a non-negative integer, got "
                          f"{what}")
    return value


def _check_rng_state(where: str, field: str, state: Any) -> None:
    if not (isinstance(state, dict) and isinstance(state.get("bit_generator"), str)
            and "state" in state):
        raise ConfigError(f"{where}: header field '{field}' is not a NumPy bit-generator state "
                          "(a mapping with 'bit_generator' and 'state')")


def _check_header(where: str, meta: Mapping[str, Any]) -> None:
    epoch = _header_int(where, meta, "epoch")
    global_step = _header_int(where, meta, "global_step")
    if global_step < epoch:
        raise ConfigError(f"{where}: header field 'global_step' is {global_step}, fewer than "
                          f"its {epoch} completed epochs (each epoch takes at least one step)")
    rng = meta.get("rng")
    if not isinstance(rng, dict):
        raise ConfigError(f"{where}: header field 'rng' must be a mapping of rng states, got "
                          f"{'nothing' if rng is None else type(rng).__name__}")
    _check_rng_state(where, "rng.shuffle", rng.get("shuffle"))
    layers = rng.get("layers", {})
    if not isinstance(layers, dict):
        raise ConfigError(f"{where}: header field 'rng.layers' must be a mapping of layer "
                          f"names to rng states, got {type(layers).__name__}")
    for layer, state in layers.items():
        _check_rng_state(where, f"rng.layers.{layer}", state)


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (already validated by ``load``).

    Layout: 8-byte little-endian header length, then the JSON header. Parsing the bytes we
    already hold avoids reading the file a second time through ``safe_open``.
    """
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}
