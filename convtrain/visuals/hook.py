"""The base of every visual: a training hook that declares its own ``logger.*`` keys.

A visual is one class in one module of :mod:`convtrain.visuals.hooks`. Subclassing
:class:`VisualHook` registers it (:data:`VISUAL_HOOKS`), and the modules of that package are
imported automatically, so a new visual needs no edit anywhere else in the code: its
``period`` and ``options`` become keys of the ``logger`` config group
(:mod:`convtrain.visuals.settings`, from which the Hydra schema is derived), and the run's
:class:`~convtrain.visuals.run_logger.VisualLogger` calls it. (Users see the keys in
``configs/logger/tensorboard.yaml``, so a new key gets its line there too.)

Schedule of a periodic visual (``period`` set): with ``logger.<period key> = N > 0`` it logs
at step 0 (the initial weights; fresh runs only, not on resume), at every step divisible by
``N`` and at the final epoch; ``N = 0`` turns it off. Step = epochs completed.
Visuals run on the host after the epoch's evaluation, in inference mode: they draw no random
numbers and change no weights, so logging never changes a run's results.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np

from convtrain import validate
from convtrain.data.images import encode_png
from convtrain.errors import InternalError
from convtrain.training.hooks import Hook, TrainState

if TYPE_CHECKING:  # the writer pulls in TensorBoard, which the config schema does not need
    from convtrain.visuals.tensorboard import HParamValue, TensorBoardWriter


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``logger.<key>``: its default, its type in the Hydra schema, its check (full key,
    value -> checked value, or ConfigError naming the key) and a one-line description."""

    key: str
    default: Any
    type: type
    check: Callable[[str, Any], Any]
    help: str


def period_option(key: str, help: str, default: int = 1) -> Option:
    """``logger.<key>``: epochs between two records of a visual; 0 = never."""
    return Option(key, default, int,
                  lambda full_key, v: validate.non_negative_int(full_key, v, zero_means="never"),
                  help)


def period_due(every: int, step: int, max_epochs: int) -> bool:
    """Whether a visual with period ``every`` (``logger.*_every_n_epochs``; 0 = off) records at
    ``step``: every ``every``-th step and the last (step 0 is logged at the start of a fresh
    run, see the module docstring)."""
    return every > 0 and (step % every == 0 or step == max_epochs)


@dataclasses.dataclass
class VisualContext:
    """What every visual of one run shares: settings, the event file and the image folder."""

    settings: Any  # the run's LoggerSettings (convtrain.visuals.settings)
    writer: TensorBoardWriter  # may be disabled: then only PNG files are written
    images_dir: Path  # <run>/images
    hparams: dict[str, HParamValue]  # flat name -> value for the HParams dashboard
    log_every_n_steps: int  # period of step/loss (trainer.log_every_n_steps; 0 = off)
    #: the hyperparameters the HParams table offers, and those that set the run apart
    hparam_columns: list[str] = dataclasses.field(default_factory=list)
    differing: frozenset[str] = frozenset()
    #: what several visuals of the run compute once (e.g. the initial kernels), by name
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)
    _folders: set[Path] = dataclasses.field(default_factory=set)

    @property
    def pictures_wanted(self) -> bool:
        """Whether anybody would see a picture (in TensorBoard or as a PNG file)."""
        return self.writer.enabled or bool(self.settings.png)

    def write_image(self, kind: str, name: str, image: np.ndarray, step: int | None) -> None:
        """TensorBoard tag ``<kind>/<name>``; PNG ``images/<kind>/<name>_epoch<NNN>.png``
        (NNN = step, 3 digits; ``<name>.png`` at step 0 when ``step`` is None: a picture that
        never changes). ``image``: ``(H, W)`` or ``(H, W, 3)`` uint8."""
        png = encode_png(image)  # once for both destinations
        self.writer.add_image(f"{kind}/{name}", image, 0 if step is None else step, png=png)
        if self.settings.png:
            folder = self.images_dir / kind
            if folder not in self._folders:  # mkdir is a syscall even when the folder exists
                folder.mkdir(parents=True, exist_ok=True)
                self._folders.add(folder)
            stem = name if step is None else f"{name}_epoch{step:03d}"
            path = folder / f"{stem}.png"
            try:
                path.write_bytes(png)
            except OSError as exc:  # a full disk's write error names no file: name it
                if exc.filename:
                    raise
                raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def spatial_kernel_layers(model: Any) -> dict[str, Any]:
    """The model's layers with spatial kernels (convolutions) by name, in order."""
    return {name: layer for name, layer in (getattr(model, "layers", None) or {}).items()
            if getattr(layer, "has_spatial_kernels", False)}


#: every visual, in the order the modules of convtrain.visuals.hooks were imported
VISUAL_HOOKS: list[type["VisualHook"]] = []


class VisualHook(Hook):
    """A visual kind. Periodic visuals set :attr:`period` and implement :meth:`log`; others
    override the hook moments they need.

    Attributes:
        period: the ``logger.*_every_n_epochs`` key of a periodic visual (None: not periodic).
        options: further ``logger.*`` keys the visual reads from ``self.ctx.settings``.
        place: where its keys stand in the ``logger`` group (``--cfg job``, the run's
            ``.hydra/config.yaml``): ascending, ``tensorboard`` first (0), ``png`` at 80.
    """

    period: ClassVar[Option | None] = None
    options: ClassVar[tuple[Option, ...]] = ()
    place: ClassVar[int] = 50

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        VISUAL_HOOKS.append(cls)

    @classmethod
    def declared_options(cls) -> tuple[Option, ...]:
        return ((cls.period,) if cls.period is not None else ()) + cls.options

    def __init__(self, ctx: VisualContext):
        self.ctx = ctx
        #: epochs between records (0 = off; non-periodic visuals: 0)
        self.every = int(getattr(ctx.settings, self.period.key)) if self.period else 0

    def due(self, step: int, max_epochs: int) -> bool:
        return period_due(self.every, step, max_epochs)

    def on_fit_start(self, state: TrainState) -> None:
        if self.every > 0 and state.start_epoch == 0:
            self.log(state, 0)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.due(state.step, state.max_epochs):
            self.log(state, state.step)

    def inspect(self, state: TrainState, step: int) -> None:
        """``task=inspect``: write this visual for a trained model (``step`` = its checkpoint's
        epoch), whatever its period. Periodic visuals :meth:`log`; others write nothing unless
        they override this (``state`` has no optimizer and no training batch)."""
        if self.period is not None:
            self.log(state, step)

    def log(self, state: TrainState, step: int) -> None:
        """Write this visual for ``step`` (0 = the initial weights, before training)."""
        raise InternalError(f"{type(self).__name__} declares a period but does not "
                            "implement log()")
