"""``kernels_change/<conv>/...``: how far every conv layer's kernels have moved from the ones the run
started with (:mod:`convtrain.visuals.initial_kernels`), per layer, per filter and per weight.

Records (step = epochs completed; step 0 = the initial weights), with ``W`` the layer's weight
``(F, C, kh, kw)`` now, ``W0`` the initial one and ``||.||`` the L2 norm over all entries:

- scalars ``kernels_change/<conv>/distance_from_init`` = ``||W - W0|| / ||W0||`` and
  ``kernels_change/<conv>/norm_vs_init`` = ``||W|| / ||W0||`` (two curves per layer, not one
  per filter; not metrics of the HParams table, which lists only
  :func:`convtrain.visuals.hooks.hparams.metric_columns`);
- histograms ``kernels_change/<conv>/filter_distance`` (the F values ``||W[f] - W0[f]||``) and
  ``kernels_change/<conv>/filter_norm`` (the F values ``||W[f]||``): which filters moved, and
  whether a few or all of them did; at those of this visual's steps that are also the kernel
  grids' steps (step 0, every ``logger.kernels_every_n_epochs``, the last; every step when the
  grids are off). With the default period 1 that is every grid step; with e.g. period 2 and
  grids every 5: steps 0, 10, 20, ... and the last.

Cost on the default run: the scalars ~0.1 ms an epoch, the histograms ~0.2 ms a record. The
scalars come every epoch because TensorBoard smooths a curve over its points (0.6 by default):
with a point every 5 epochs, conv1's smoothed distance on the default run read 0.40 at epoch 5
where the value was 0.65.

The ``|W - W0|`` grid ``kernels_change/<conv>`` is drawn with the other kernel pictures
(:mod:`convtrain.visuals.hooks.kernels`, ``logger.kernels_every_n_epochs``). Per-filter curves: ``logger.weight_norms_every_n_epochs`` (off by default).
"""
from __future__ import annotations

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_due, period_option
from convtrain.visuals.initial_kernels import MeasuresFromInitialKernels, current_kernels


def relative(numerator: float, denominator: float) -> float:
    """``numerator / denominator``; 0 when both are 0 (a layer that starts and stays at zero)."""
    if denominator > 0:
        return numerator / denominator
    return 0.0 if numerator == 0 else float("inf")


class KernelChange(MeasuresFromInitialKernels, VisualHook):
    place = 12
    period = period_option("kernel_change_every_n_epochs",
                           "kernels_change/<conv>/...: distance from the initial kernels "
                           "(scalars; the per-filter histograms with the kernel grids)")

    def log(self, state: TrainState, step: int) -> None:
        writer = self.ctx.writer
        if not self.reference:  # nothing would be seen
            return
        scalars: dict[str, float] = {}
        histograms: dict[str, np.ndarray] = {}
        for name, weight in current_kernels(state).items():
            w = np.asarray(weight, np.float64).reshape(len(weight), -1)
            w0 = np.asarray(self.reference[name], np.float64).reshape(w.shape)
            delta = w - w0
            norm0 = float(np.sqrt(np.einsum("ij,ij->", w0, w0)))
            # squared norms per filter (one pass each); the layer's is their sum
            distance_sq = np.einsum("ij,ij->i", delta, delta)
            norm_sq = np.einsum("ij,ij->i", w, w)
            tag = f"kernels_change/{name}"
            scalars[f"{tag}/distance_from_init"] = relative(float(np.sqrt(distance_sq.sum())),
                                                            norm0)
            scalars[f"{tag}/norm_vs_init"] = relative(float(np.sqrt(norm_sq.sum())), norm0)
            histograms[f"{tag}/filter_distance"] = np.sqrt(distance_sq)
            histograms[f"{tag}/filter_norm"] = np.sqrt(norm_sq)
        writer.add_scalars(scalars, step)  # one record for all layers
        if self._with_the_grids(state, step):
            writer.add_histograms(histograms, step)

    def _with_the_grids(self, state: TrainState, step: int) -> bool:
        """Whether the per-filter histograms go in at ``step`` (one of this visual's steps):
        when it is also a kernel-grid step (0, every ``logger.kernels_every_n_epochs``, the
        last: ``task=inspect``'s only step); at every step when the grids are off."""
        every = int(self.ctx.settings.kernels_every_n_epochs)
        return every == 0 or period_due(every, step, state.max_epochs)
