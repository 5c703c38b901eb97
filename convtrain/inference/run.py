"""``load_run``: a trained run, ready to use -- its model with the chosen checkpoint's weights, the
config it was trained with and the preprocessing of its inputs.

Everything comes from the checkpoint file itself (its header holds the resolved config and the
``inputs`` record: per-sample shape, class names, pixel scale and normalisation statistics), so a
checkpoint copied away from its run directory still loads. Checkpoints written before the
``inputs`` record existed get it from the dataset's files (read once) and the normalisation
statistics stored in their ``data`` record.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from convtrain.errors import ConfigError, DataError
from convtrain.data.splits import Preprocessing
from convtrain.inference.inputs import as_batch, check_pixel_values
from convtrain.nn.model import Model, build_model
from convtrain.ops.losses import log_softmax
from convtrain.runtime.backend import Backend, get_backend, to_host
from convtrain.training.checkpoint import Checkpoint, load_checkpoint, run_directory

#: the checkpoints a run directory holds (trainer.checkpoint=true), by the name users give
CHECKPOINT_NAMES = ("best", "last")


@dataclasses.dataclass
class TrainedRun:
    """A trained model and what it needs to be used on new inputs.

    Attributes:
        model: the trained :class:`~convtrain.nn.model.Model`, weights of :attr:`checkpoint`.
        config: the run's resolved config (plain dict: ``config["model"]``, ``["data"]``, ...).
        preprocessing: raw pixels -> model inputs, with the training statistics.
        input_shape: per-sample shape ``(C, H, W)``.
        class_names: one name per output class (index = class).
        checkpoint: the ``.safetensors`` file the weights came from.
        epoch: the epochs the checkpoint had completed.
        metrics: the checkpoint epoch's metrics (``val_accuracy``, ...).
    """

    model: Model
    config: dict[str, Any]
    preprocessing: Preprocessing
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    checkpoint: Path
    epoch: int
    metrics: dict[str, Any]

    @property
    def run_dir(self) -> Path:
        """The run directory: the parent of ``checkpoints/`` (else the file's own folder)."""
        return run_directory(self.checkpoint)

    @property
    def checkpoint_in_run(self) -> str:
        """:attr:`checkpoint` relative to :attr:`run_dir` (``checkpoints/best.safetensors``):
        what the records written into ``RUN_DIR/<task>/`` (metrics.json, export.json,
        predictions.json) store, whatever the shell's working directory was."""
        return self.checkpoint.relative_to(self.run_dir).as_posix()

    def logits(self, raw: Any, batch_size: int = 256) -> np.ndarray:
        """Raw pixels ``(N, C, H, W)`` as the dataset stores them -> logits ``(N, K)`` (host)."""
        x = self._check_raw(raw)
        out = np.empty((x.shape[0], len(self.class_names)), dtype=np.float64)
        xp = self.model.backend.xp
        for start in range(0, x.shape[0], batch_size):
            batch = self.preprocessing.apply(x[start:start + batch_size])
            batch = xp.asarray(batch.astype(self.model.dtype, copy=False))
            out[start:start + batch_size] = to_host(self.model.forward(batch, training=False))
        return out

    def predict_proba(self, raw: Any, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, K)`` (float64, rows sum to 1) for raw pixels ``(N, C, H, W)``."""
        return np.exp(log_softmax(self.logits(raw, batch_size)))

    def predict(self, raw: Any, batch_size: int = 256) -> np.ndarray:
        """The most probable class ``(N,)`` (int64) for raw pixels ``(N, C, H, W)``."""
        return np.argmax(self.logits(raw, batch_size), axis=1).astype(np.int64)

    def _check_raw(self, raw: Any) -> np.ndarray:
        """``raw`` as a checked ``(N, C, H, W)`` host array: the shape and value rules of
        ``task=predict``'s arrays (:func:`~convtrain.inference.inputs.as_batch`,
        :func:`~convtrain.inference.inputs.check_pixel_values`), without resizing."""
        x = np.asarray(to_host(raw))
        source = f"raw images of shape {tuple(x.shape)}"
        batch, _ = as_batch(x, self.input_shape, source)
        if tuple(batch.shape[1:]) != self.input_shape:
            raise DataError(f"{source}: expected raw images of shape "
                            f"(N, {', '.join(map(str, self.input_shape))}) for this model (or "
                            "one image without N)")
        check_pixel_values(batch, self.preprocessing.pixel_max, source)
        return batch

    def __repr__(self) -> str:
        return (f"TrainedRun({str(self.checkpoint)!r}, epoch {self.epoch}, input "
                f"{self.input_shape}, {len(self.class_names)} classes)")


def resolve_run_checkpoint(path: str | Path, which: str = "best", *,
                           where: str = "trainer.resume") -> Path:
    """The checkpoint file ``path`` means: a ``.safetensors`` file (or its ``.json`` sibling)
    as is; a run directory or its ``checkpoints/`` directory -> its ``<which>.safetensors``.

    Raises:
        ConfigError: ``which`` is not best/last, or the file is not there (one line naming
            ``where``, the path and what was looked for).
    """
    if which not in CHECKPOINT_NAMES:
        raise ConfigError(f"checkpoint: expected one of {', '.join(CHECKPOINT_NAMES)}, got {which!r}")
    p = Path(str(path)).expanduser()
    if p.is_file():
        if p.suffix not in (".safetensors", ".json"):
            raise ConfigError(f"{where}: '{p}' is not a .safetensors checkpoint (expected a "
                              f"training run's directory or its checkpoints/best.safetensors "
                              f"or last.safetensors)")
        return p.with_suffix(".safetensors") if p.suffix == ".json" else p
    if not p.exists():
        raise ConfigError(f"{where}: '{p}' does not exist (expected a training run's directory "
                          f"or a .safetensors checkpoint)")
    candidates = [p / "checkpoints" / f"{which}.safetensors", p / f"{which}.safetensors"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    others = [c for name in CHECKPOINT_NAMES if name != which
              for c in (p / "checkpoints" / f"{name}.safetensors", p / f"{name}.safetensors")
              if c.is_file()]
    hint = (f"; it has {others[0].name}: set checkpoint={others[0].stem}" if others else
            "; was it trained with trainer.checkpoint=false, or did it fail before its first "
            "epoch ended?")
    raise ConfigError(f"{where}: '{p}' holds no {which} checkpoint (looked for "
                      f"{', '.join(str(c) for c in candidates)}){hint}")


def load_run(path: str | Path, *, checkpoint: str = "best",
             backend: Backend | str = "numpy", where: str = "load_run") -> TrainedRun:
    """Load a trained run for evaluation, prediction or export.

    Args:
        path: a run directory (its ``checkpoints/<checkpoint>.safetensors``), its
            ``checkpoints/`` directory, or a checkpoint file.
        checkpoint: ``"best"`` (the best epoch by ``trainer.monitor``) or ``"last"``; ignored
            when ``path`` is a file.
        backend: where the model runs (``"numpy"`` or ``"cupy"``).
        where: what to name in error messages (the CLI passes ``trainer.resume``).

    Raises:
        ConfigError: a missing or damaged checkpoint, or one whose tensors do not fit the
            architecture of its own config (one line naming the file).
    """
    file = resolve_run_checkpoint(path, checkpoint, where=where)
    ckpt = load_checkpoint(file)
    config = _run_config(ckpt)
    inputs = _inputs_record(ckpt, config)
    shape = tuple(int(d) for d in inputs["shape"])
    dtype = np.dtype(str((config.get("backend") or {}).get("dtype", "float32")))
    try:
        model = build_model(config["model"], shape, seed=int(config.get("seed", 0)), dtype=dtype)
        model.load_state_dict(ckpt.model_state, strict=True)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint '{ckpt.path}' does not fit the model of its own config: "
                          f"{exc}") from None
    model.to_backend(backend if isinstance(backend, Backend) else get_backend(str(backend)))
    preprocessing = Preprocessing(float(inputs["pixel_max"]), tuple(map(float, inputs["mean"])),
                                  tuple(map(float, inputs["std"])))
    class_names = tuple(str(n) for n in inputs["class_names"])
    if model.output_shape != (len(class_names),):
        raise ConfigError(f"checkpoint '{ckpt.path}': the model outputs shape {model.output_shape} "
                          f"but its dataset has {len(class_names)} classes")
    return TrainedRun(model=model, config=config, preprocessing=preprocessing,
                      input_shape=shape, class_names=class_names, checkpoint=ckpt.path,
                      epoch=int(ckpt.meta.get("epoch", 0)),
                      metrics=dict(ckpt.meta.get("metrics") or {}))


def _run_config(ckpt: Checkpoint) -> dict[str, Any]:
    text = ckpt.meta.get("config")
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict) or not isinstance(config.get("model"), Mapping):
        raise ConfigError(f"checkpoint '{ckpt.path}': its header holds no readable run config "
                          "with a model (was it written by convtrain's trainer?)")
    return config


def _inputs_record(ckpt: Checkpoint, config: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint's ``inputs`` record; for older checkpoints, rebuilt from the dataset's
    files (shape, class names, pixel scale) and the stored normalisation statistics."""
    record = ckpt.meta.get("inputs")
    if isinstance(record, dict) and {"shape", "class_names", "pixel_max", "mean", "std"} <= set(record):
        return record
    from convtrain.data.load import read_raw_dataset  # noqa: PLC0415

    _, raw = read_raw_dataset(config.get("data") or {})
    channels = int(raw.train.x.shape[1])
    stats = ((ckpt.meta.get("data") or {}).get("normalization")
             or {"mean": [0.0] * channels, "std": [1.0] * channels})
    return {"shape": list(raw.train.x.shape[1:]), "class_names": list(raw.class_names),
            "pixel_max": raw.pixel_max, "mean": stats["mean"], "std": stats["std"]}
