"""What a run logs beyond scalars: filter grids, feature maps, histograms, the HParams session.

One :class:`VisualLogger` serves one ``Trainer.fit()`` call (settings: the ``logger`` config
group, parsed by :func:`parse_logger_settings`). Tags and files, with ``step`` = epochs
completed (0 = the initial weights, before any training):

- ``kernels/<conv>``: the filter grid of every conv layer (:func:`convtrain.visuals.grids.kernel_grid`;
  RGB tiles only for a conv that reads the 3-channel input image);
- ``feature_maps/<conv>``: that conv layer's output (before its activation) for one fixed
  image, :func:`first_image` (:func:`convtrain.visuals.grids.feature_map_grid`);
- ``feature_maps/input``: the fixed image itself (step 0 only);
- ``<layer>/<param>``: histogram of each parameter (e.g. ``conv1/weight``);
- ``<layer>/<param>_grad``: histogram of its gradient on the epoch's last training batch
  (epochs >= 1, trainable layers only);
- an HParams session: started (flattened config) when ``fit`` starts, ended when it stops.

PNG copies (``logger.png``): ``<run>/images/kernels/<conv>_epoch<NNN>.png`` and
``<run>/images/feature_maps/<conv>_epoch<NNN>.png`` (NNN = step, zero-padded to 3 digits),
plus ``<run>/images/feature_maps/input.png``.

Schedule: a kind with period ``N > 0`` is logged at step 0 (fresh runs only, not on resume),
at every step divisible by ``N`` and at the final epoch; ``N = 0`` turns it off.
Everything runs on the host after the epoch's evaluation, in inference mode: it draws no
random numbers and changes no weights, so logging never changes a run's results.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

import numpy as np

from convtrain import validate
from convtrain.app.schema import LoggerConfig
from convtrain.errors import ConfigError
from convtrain.nn import Conv2d
from convtrain.visuals.png import encode_png
from convtrain.visuals.tensorboard import HParamValue, TensorBoardWriter
from convtrain.visuals.grids import SCALINGS, feature_map_grid, image_tile, kernel_grid

_PERIODS = ("kernels_every_n_epochs", "feature_maps_every_n_epochs", "histograms_every_n_epochs")
_FLAGS = ("tensorboard", "png", "hparams")


def parse_logger_settings(logger: Mapping[str, Any] | LoggerConfig | None) -> LoggerConfig:
    """Check the ``logger`` config group; missing keys take the schema's defaults.

    Raises:
        ConfigError: naming ``logger.<key>`` for an unknown key or a bad value.
    """
    if logger is None:
        return LoggerConfig()
    if isinstance(logger, LoggerConfig):
        logger = dataclasses.asdict(logger)
    logger = validate.mapping("logger", logger, expected="a mapping of logger settings")
    # the schema may hold enum members (e.g. for kernel_scaling): compare their values
    logger = {key: v.value if isinstance(v, enum.Enum) else v for key, v in logger.items()}
    known = [f.name for f in dataclasses.fields(LoggerConfig)]
    for key in logger:
        if key not in known:
            raise ConfigError(f"logger.{key}: unknown key (known keys: {', '.join(known)})")
    for key in _PERIODS:
        if key in logger:
            logger[key] = validate.non_negative_int(f"logger.{key}", logger[key],
                                                    zero_means="never")
    for key in _FLAGS:
        if key in logger:
            logger[key] = validate.boolean(f"logger.{key}", logger[key])
    scaling = logger.get("kernel_scaling", LoggerConfig.kernel_scaling)
    if scaling not in SCALINGS:
        raise ConfigError(f"logger.kernel_scaling: expected one of {', '.join(SCALINGS)}, "
                          f"got {scaling!r}")
    return LoggerConfig(**logger)


def flatten_config(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, HParamValue]:
    """Nested config -> ``{"model.layers.conv1.filters": 16, "optimizer.lr": 0.1, ...}``.

    Values kept as they are: bool, int, float, str (NumPy scalars become Python scalars).
    Lists and tuples become JSON text (``"[3, 3]"``), enums their name, other objects
    ``str(obj)``. ``None`` and empty mappings are left out (a HParams cell cannot be null).
    """
    flat: dict[str, HParamValue] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=name + "."))
        elif value is None:
            continue
        elif isinstance(value, (bool, np.bool_)):
            flat[name] = bool(value)
        elif isinstance(value, (int, float, str, np.integer, np.floating)):
            flat[name] = value.item() if isinstance(value, np.generic) else value
        elif isinstance(value, enum.Enum):
            flat[name] = value.name
        elif isinstance(value, (list, tuple)):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = str(value)
    return flat


def first_image(data: Any) -> np.ndarray | None:
    """The fixed sample for feature maps: the first validation image ``(C, H, W)``, else the
    first test image, else the first training image (None if all splits are empty)."""
    for split in (data.val, data.test, data.train):
        if len(split) > 0:
            return np.asarray(split.x[0])
    return None


def conv_layers(model: Any) -> dict[str, Conv2d]:
    """The model's conv layers by name, in order (none for models without ``layers``)."""
    return {name: layer for name, layer in (getattr(model, "layers", None) or {}).items()
            if isinstance(layer, Conv2d)}


class VisualLogger:
    """Writes the pictures, histograms and HParams session of one training run.

    Use as a context manager around the epochs: entering starts the HParams session (and logs
    step 0 for fresh runs) and flushes; :meth:`log_epoch` logs what is due after each epoch
    (the caller flushes once per epoch, together with its scalars); leaving ends the session
    with status ``success``, or ``failure`` when an exception (a diverged loss, Ctrl-C) stops
    training.

    Args:
        settings: the parsed ``logger`` group.
        tb: the run's writer (may be disabled: then only PNG files are written).
        model: exposes ``layers`` (name -> layer with ``params``/``grads``) and ``dtype``.
        backend: the run's backend (arrays are copied to the host with ``to_numpy``).
        sample: one image ``(C, H, W)`` for the feature maps, or None.
        images_dir: ``<run>/images``.
        hparams: flat name -> bool / number / str for the HParams dashboard.
        max_epochs: the final epoch is always logged.
        start_epoch: epochs already done (> 0 when resuming: step 0 is not logged again).
    """

    def __init__(self, settings: LoggerConfig, tb: TensorBoardWriter, *, model: Any,
                 backend: Any, sample: np.ndarray | None, images_dir: Path,
                 hparams: Mapping[str, HParamValue], max_epochs: int, start_epoch: int = 0):
        self.settings = settings
        self.tb = tb
        self.model = model
        self.backend = backend
        self.sample = sample
        self.images_dir = Path(images_dir)
        self.hparams = dict(hparams)
        self.max_epochs = max_epochs
        self.start_epoch = start_epoch
        self.convs = conv_layers(model)
        # the first layer's RGB tiles are meaningful only where it reads the 3-channel image
        first = next(iter(getattr(model, "layers", None) or {}), None)
        self._rgb_layer = first if first in self.convs and self._input_channels() == 3 else None
        self._session = False
        self._folders: set[Path] = set()

    # --- context: the HParams session ----------------------------------------------------
    def __enter__(self) -> "VisualLogger":
        s = self.settings
        if s.hparams and self.tb.enabled:
            self.tb.add_session_start(self.hparams)
            self._session = True
        if self.start_epoch == 0:
            self._log_step(0, kernels=s.kernels_every_n_epochs > 0,
                           maps=s.feature_maps_every_n_epochs > 0,
                           histograms=s.histograms_every_n_epochs > 0, grads=False)
            if s.feature_maps_every_n_epochs > 0 and self.sample is not None and self.convs:
                self._image("feature_maps", "input", image_tile(self.sample), None)
        self.tb.flush()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._session:
            self.tb.add_session_end("success" if exc_type is None else "failure")
            self.tb.flush()

    # --- per epoch -----------------------------------------------------------------------
    def log_epoch(self, epoch: int) -> None:
        """Log what is due after 0-based ``epoch`` (at step ``epoch + 1``); not flushed."""
        step = epoch + 1
        s = self.settings
        self._log_step(step, kernels=self._due(s.kernels_every_n_epochs, step),
                       maps=self._due(s.feature_maps_every_n_epochs, step),
                       histograms=self._due(s.histograms_every_n_epochs, step), grads=True)

    def _due(self, period: int, step: int) -> bool:
        return period > 0 and (step % period == 0 or step == self.max_epochs)

    def _log_step(self, step: int, *, kernels: bool, maps: bool, histograms: bool,
                  grads: bool) -> None:
        pictures = self.tb.enabled or self.settings.png  # otherwise nobody would see them
        if kernels and pictures:
            for name, layer in self.convs.items():
                weight = self.backend.to_numpy(layer.params["weight"])
                grid = kernel_grid(weight, scaling=self.settings.kernel_scaling,
                                   rgb=name == self._rgb_layer)
                self._image("kernels", name, grid, step)
        if maps and pictures and self.sample is not None:
            for name, out in self._conv_outputs().items():
                self._image("feature_maps", name, feature_map_grid(out), step)
        if histograms and self.tb.enabled:
            self._histograms(step, grads)

    def _histograms(self, step: int, grads: bool) -> None:
        for name, layer in (getattr(self.model, "layers", None) or {}).items():
            for key, value in layer.params.items():
                self.tb.add_histogram(f"{name}/{key}", self.backend.to_numpy(value), step)
                grad = layer.grads.get(key) if grads and getattr(layer, "trainable", True) \
                    else None
                if grad is not None:
                    self.tb.add_histogram(f"{name}/{key}_grad", self.backend.to_numpy(grad),
                                          step)

    def _conv_outputs(self) -> dict[str, np.ndarray]:
        """Each conv layer's output ``(F, oh, ow)`` for :attr:`sample`, copied to the host
        (layers may reuse their output buffers on the next call)."""
        if not self.convs:
            return {}
        outputs = self.model.layer_outputs(self.sample[None], self.convs, training=False)
        return {name: np.array(self.backend.to_numpy(y[0]), copy=True)
                for name, y in outputs.items()}

    def _image(self, kind: str, name: str, image: np.ndarray, step: int | None) -> None:
        """TensorBoard tag ``<kind>/<name>``; PNG ``images/<kind>/<name>_epoch<NNN>.png``
        (``<name>.png`` and step 0 when ``step`` is None: a picture that never changes)."""
        png = encode_png(image)  # once for both destinations
        self.tb.add_image(f"{kind}/{name}", image, 0 if step is None else step, png=png)
        if self.settings.png:
            folder = self.images_dir / kind
            if folder not in self._folders:  # mkdir is a syscall even when the folder exists
                folder.mkdir(parents=True, exist_ok=True)
                self._folders.add(folder)
            stem = name if step is None else f"{name}_epoch{step:03d}"
            (folder / f"{stem}.png").write_bytes(png)

    def _input_channels(self) -> int | None:
        shape = getattr(self.model, "input_shape", None)
        return int(shape[0]) if shape else None
