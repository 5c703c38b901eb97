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
    return Checkpoint(file, model_state, optimizer_state, meta)


def _header_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors blob (already validated by ``load``).

    Layout: 8-byte little-endian header length, then the JSON header. Parsing the bytes we
    already hold avoids reading the file a second time through ``safe_open``.
    """
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}
