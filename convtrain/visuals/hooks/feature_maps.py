"""``feature_maps/<layer>``: what each layer with spatial kernels makes of the fixed samples.

The samples are :func:`convtrain.visuals.samples.fixed_samples` -- the first test image of
each class, the same in every run and sweep job on a dataset -- logged as
``feature_maps/input`` (one row, in class order; written again when a run resumes, so a
resumed run has it too). Each such layer's output for them (before its activation) is drawn by
:func:`convtrain.visuals.samples.feature_maps_by_sample`: row i = sample i, column f = channel
f, each channel scaled over all samples together. PNG copies:
``<run>/images/feature_maps/<layer>_epoch<NNN>.png`` and ``.../input.png``.
"""
from __future__ import annotations

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_option, spatial_kernel_layers
from convtrain.visuals.samples import Samples, feature_maps_by_sample, fixed_samples, samples_row


class FeatureMaps(VisualHook):
    place = 20
    # every 10 epochs, at every other kernel grid (the same steps: one slider position shows a
    # layer's filters and what they make of the samples): a record costs ~5 ms on the default
    # run (a forward pass and two large PNGs), 6 % of its ~100 ms epochs when drawn every
    # epoch; issue #11's budget (logging under 5 % of the default run) leaves room for 4 of
    # them beside 7 kernel grids; and TensorBoard keeps 10 images per tag anyway
    period = period_option("feature_maps_every_n_epochs", "feature_maps/<conv>: each conv's "
                                                          "output for the fixed samples (the "
                                                          "first test image of each class)",
                           default=10)

    def on_fit_start(self, state: TrainState) -> None:
        self.samples: Samples | None = fixed_samples(state.data)
        super().on_fit_start(state)
        # on resume too: a resumed run writes a new event directory, which needs the input
        if (self.every > 0 and self.samples is not None
                and spatial_kernel_layers(state.model) and self.ctx.pictures_wanted):
            self.ctx.write_image("feature_maps", "input", samples_row(self.samples.x), None)

    def inspect(self, state: TrainState, step: int) -> None:
        self.samples = fixed_samples(state.data)
        if (self.samples is not None and spatial_kernel_layers(state.model)
                and self.ctx.pictures_wanted):
            self.ctx.write_image("feature_maps", "input", samples_row(self.samples.x), None)
        self.log(state, step)

    def log(self, state: TrainState, step: int) -> None:
        if not self.ctx.pictures_wanted or getattr(self, "samples", None) is None:
            return
        for name, out in self._outputs(state).items():
            self.ctx.write_image("feature_maps", name, feature_maps_by_sample(out), step)

    def _outputs(self, state: TrainState) -> dict[str, np.ndarray]:
        """Each such layer's output ``(K, F, oh, ow)`` for the samples, copied to the host
        (layers may reuse their output buffers on the next call)."""
        layers = spatial_kernel_layers(state.model)
        if not layers or self.samples is None:
            return {}
        outputs = state.model.layer_outputs(self.samples.x, layers, training=False)
        return {name: np.array(state.backend.to_numpy(y), copy=True)
                for name, y in outputs.items()}
