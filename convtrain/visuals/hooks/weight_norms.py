"""``weight_norms/<layer>/filter_<k>``: the L2 norm of each filter of every layer with spatial
kernels, as scalars (step = epochs completed; step 0 = the initial weights).

Filter ``k`` of a weight ``(F, C, kh, kw)`` is ``weight[k]``; its norm is
``sqrt(sum(weight[k] ** 2))``. A filter whose norm collapses towards 0 has died (it passes
nothing on); one that keeps growing hints at a missing weight decay. The tags follow
``kernels/<layer>`` (the layer in the second part, so TensorBoard's tag filter ``conv1``
shows one layer), and ``k`` is zero-padded to the layer's width so charts sort by filter.
"""
from __future__ import annotations

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_option, spatial_kernel_layers


class WeightNorms(VisualHook):
    place = 40
    # off by default: one scalar per filter, and TensorBoard's HParams dashboard turns every
    # scalar tag into a metric column
    period = period_option("weight_norms_every_n_epochs", "weight_norms/<conv>/filter_<k>: "
                                                          "L2 norm of each conv filter", default=0)

    def log(self, state: TrainState, step: int) -> None:
        writer = self.ctx.writer
        if not writer.enabled:
            return
        for name, layer in spatial_kernel_layers(state.model).items():
            weight = np.asarray(state.backend.to_numpy(layer.params["weight"]), np.float64)
            norms = np.linalg.norm(weight.reshape(len(weight), -1), axis=1)
            width = len(str(len(norms) - 1))
            for k, norm in enumerate(norms):
                writer.add_scalar(f"weight_norms/{name}/filter_{k:0{width}d}", float(norm), step)
