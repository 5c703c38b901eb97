"""Per-filter curves of every layer with spatial kernels (step = epochs completed; step 0 = the
initial weights), off by default:

- ``weight_norms/<layer>/filter_<k>``: the L2 norm ``||W[k]||`` of filter ``k`` of the weight
  ``W`` ``(F, C, kh, kw)``. A filter whose norm collapses towards 0 has died (it passes nothing
  on); one that keeps growing hints at a missing weight decay.
- ``weight_distances/<layer>/filter_<k>``: its distance ``||W[k] - W0[k]||`` from the initial
  filter (:mod:`convtrain.visuals.initial_kernels`): which filters learn, and when they stop.

The tags follow ``kernels/<layer>`` (the layer in the second part, so TensorBoard's tag filter
``conv1`` shows one layer), and ``k`` is zero-padded to the layer's width so charts sort by
filter. The per-layer summary of the same numbers is ``kernels_change/<layer>/...``.
"""
from __future__ import annotations

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_option
from convtrain.visuals.initial_kernels import MeasuresFromInitialKernels, current_kernels


class WeightNorms(MeasuresFromInitialKernels, VisualHook):
    place = 40
    # off by default: two charts per filter bury the others in Time Series (kernel_change
    # gives the per-layer summary)
    period = period_option("weight_norms_every_n_epochs",
                           "weight_norms/<conv>/filter_<k> and weight_distances/<conv>/filter_<k>: "
                           "L2 norm of each conv filter and its distance from the initial one",
                           default=0)

    def log(self, state: TrainState, step: int) -> None:
        writer = self.ctx.writer
        if not writer.enabled:
            return
        for name, weight in current_kernels(state).items():
            w = np.asarray(weight, np.float64).reshape(len(weight), -1)
            norms = np.linalg.norm(w, axis=1)
            width = len(str(len(norms) - 1))
            for k in range(len(norms)):
                writer.add_scalar(f"weight_norms/{name}/filter_{k:0{width}d}", float(norms[k]),
                                  step)
            if name not in self.reference:
                continue
            w0 = np.asarray(self.reference[name], np.float64).reshape(w.shape)
            distances = np.linalg.norm(w - w0, axis=1)
            for k in range(len(norms)):
                writer.add_scalar(f"weight_distances/{name}/filter_{k:0{width}d}",
                                  float(distances[k]), step)
