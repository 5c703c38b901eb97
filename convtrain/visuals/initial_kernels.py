"""The reference weights of the kernel views: the conv kernels a run started from.

``kernels/<conv>`` under ``logger.kernel_scaling=fixed`` takes its colour limit from them, and
``kernels_change/...`` and ``weight_distances/...`` measure the distance from them. A fresh run
(no resume) takes the weights of step 0 and keeps them in ``<run>/initial_kernels.npz`` (one
float32 array per conv layer, named by the layer, plus ``__epoch__`` = 0), so a resumed run
measures from the same start: it reads its own run directory's file (a resume in place) or,
when that has none, the file of the run whose ``checkpoints/`` it resumed from (``trainer.resume``
into a new run directory, the default), and keeps a copy in its own directory. A resumed run
that finds no usable file (missing, unreadable, of other layers or shapes) takes the weights it
resumed from instead (and records them, with their epoch, for later resumes): then "change"
means change since that epoch.

``task=inspect`` reads the trained run's file without writing (:func:`recorded_initial_kernels`);
a run without one (trained with no pictures, or before these views) gets no change views.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np

from convtrain.training.atomic import atomic_write_bytes
from convtrain.training.checkpoint import run_directory
from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualContext, spatial_kernel_layers

FILE_NAME = "initial_kernels.npz"
_EPOCH_KEY = "__epoch__"  # no layer name: names are identifiers

log = logging.getLogger("convtrain")


def current_kernels(state: TrainState) -> dict[str, np.ndarray]:
    """Each conv layer's weight ``(F, C, kh, kw)`` as a host copy, by layer name."""
    return {name: np.array(state.backend.to_numpy(layer.params["weight"]), copy=True)
            for name, layer in spatial_kernel_layers(state.model).items()}


def _read(path: Path,
          expected: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int] | None:
    """The file's arrays and epoch if it holds exactly the expected layers and shapes, else
    None."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: np.array(stored[name]) for name in stored.files
                      if name != _EPOCH_KEY}
            epoch = int(stored[_EPOCH_KEY]) if _EPOCH_KEY in stored.files else 0
    except (OSError, ValueError, KeyError, EOFError, TypeError):  # missing, truncated, not an npz
        return None
    if arrays.keys() != expected.keys() or any(
            arrays[name].shape != expected[name].shape for name in expected):
        return None
    return arrays, epoch


def _candidates(state: TrainState) -> list[Path]:
    """Where a resumed run looks for its initial kernels: its own directory, then the run
    directory of the checkpoint it resumed from (``<run>/checkpoints/<name>.safetensors``)."""
    paths = [Path(state.run_dir) / FILE_NAME]
    source = state.resumed_from
    if source is not None and Path(source).parent.name == "checkpoints":
        other = run_directory(source) / FILE_NAME
        if other.resolve() != paths[0].resolve():
            paths.append(other)
    return paths


def _write(path: Path, kernels: dict[str, np.ndarray], epoch: int) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **kernels, **{_EPOCH_KEY: np.array(epoch)})
    atomic_write_bytes(path, buffer.getvalue())


def initial_kernels(ctx: VisualContext, state: TrainState) -> dict[str, np.ndarray]:
    """The reference kernels of this run by layer name (see the module doc); computed once
    per run and shared by the visuals through ``ctx.shared``. Call it when training starts."""
    cached = ctx.shared.get("initial_kernels")
    if cached is not None:
        return cached
    own = Path(state.run_dir) / FILE_NAME
    current = current_kernels(state)
    found = None
    if state.start_epoch > 0:
        for path in _candidates(state):
            found = _read(path, current)
            if found is not None:
                if path != own:  # later resumes of this run start from the same kernels
                    _write(own, *found)
                break
    if found is None:
        reference = current
        if current:
            _write(own, current, state.start_epoch)
    else:
        reference = found[0]
    ctx.shared["initial_kernels"] = reference
    return reference


def recorded_initial_kernels(ctx: VisualContext, state: TrainState) -> dict[str, np.ndarray]:
    """``task=inspect``: the initial kernels the trained run recorded, by layer name -- the
    ``initial_kernels.npz`` of the run whose checkpoint ``state.resumed_from`` is -- read, never
    written; ``{}`` when it has no usable file, said once in the log (the kernel change views
    are then skipped, and ``kernel_scaling=fixed`` falls back to each layer's own max |w|)."""
    cached = ctx.shared.get("recorded_initial_kernels")
    if cached is not None:
        return cached
    current = current_kernels(state)
    paths = _candidates(state)
    found = next((f for f in (_read(path, current) for path in paths) if f is not None), None)
    reference = found[0] if found is not None else {}
    if current and found is None:
        log.warning("inspect: no usable %s in %s: kernels_change/ and weight_distances/ skipped, "
                    "kernels/ under kernel_scaling=fixed drawn at each layer's max |w|",
                    FILE_NAME, paths[-1].parent)
    ctx.shared["recorded_initial_kernels"] = reference
    return reference


def fixed_limit(initial: np.ndarray, margin: float) -> float:
    """The colour limit of ``logger.kernel_scaling=fixed``: ``margin`` x max |w| of a layer's
    initial weights (the same at every step)."""
    return float(margin) * float(np.abs(initial).max()) if initial.size else 0.0


class MeasuresFromInitialKernels:
    """Mixin for a visual that compares the kernels with the initial ones (put it before
    :class:`~convtrain.visuals.hook.VisualHook` in the bases): ``self.reference`` holds them,
    by layer name, when the visual is on and something would be seen (else empty); in
    ``task=inspect`` they come from the trained run's file, when it kept one."""

    reference: dict[str, np.ndarray]

    def on_fit_start(self, state: TrainState) -> None:
        self.reference = {}
        if self.every > 0 and self.ctx.writer.enabled:  # type: ignore[attr-defined]
            self.reference = initial_kernels(self.ctx, state)  # type: ignore[attr-defined]
        super().on_fit_start(state)  # type: ignore[misc]

    def inspect(self, state: TrainState, step: int) -> None:
        self.reference = {}
        if self.ctx.writer.enabled:  # type: ignore[attr-defined]
            self.reference = recorded_initial_kernels(self.ctx, state)  # type: ignore[attr-defined]
        self.log(state, step)  # type: ignore[attr-defined]
