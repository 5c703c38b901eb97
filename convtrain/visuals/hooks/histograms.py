"""``histograms/<layer>/<param>``: a histogram of every parameter;
``histograms/<layer>/<param>_grad``: of its gradient on the epoch's last *full* training batch
(a smaller remainder batch, e.g. 13 images, gives a noisier gradient that would not compare
across epochs; epochs >= 1, trainable layers only). One tag group (``histograms``), so
TensorBoard's Time Series keeps them together instead of among the scalar groups.
"""
from __future__ import annotations

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_option


class Histograms(VisualHook):
    place = 30
    # every 10 epochs: ~2 ms per record on the default model (18 histograms, one record), and
    # a 30-epoch run still shows 4 slices (the budget: see feature_maps.py)
    period = period_option("histograms_every_n_epochs", "histograms/<layer>/<param> and "
                                                        "<param>_grad (last full batch of "
                                                        "the epoch)", default=10)

    def __init__(self, ctx):
        super().__init__(ctx)
        self.grads: dict[tuple[str, str], np.ndarray] = {}
        self._capture_step: int | None = None

    def on_epoch_start(self, state: TrainState) -> None:
        """When this epoch is logged, note the global step of its last full batch."""
        self.grads = {}
        self._capture_step = None
        if self.ctx.writer.enabled and self.due(state.step, state.max_epochs):
            full = len(state.data.train) // max(1, int(state.batch_size))
            last_full = min(full, state.batches_per_epoch) or state.batches_per_epoch
            self._capture_step = state.global_step + last_full

    def on_train_batch_end(self, state: TrainState) -> None:
        if state.global_step != self._capture_step:
            return
        to_host = state.backend.to_numpy
        for name, layer in (getattr(state.model, "layers", None) or {}).items():
            if getattr(layer, "trainable", True):
                for key, grad in layer.grads.items():
                    if grad is not None:  # copied: the next batch overwrites the buffers
                        self.grads[name, key] = np.array(to_host(grad), copy=True)

    def log(self, state: TrainState, step: int) -> None:
        writer, to_host = self.ctx.writer, state.backend.to_numpy
        if not writer.enabled:
            return
        def arrays():  # one host copy at a time: each is summarised before the next
            for name, layer in (getattr(state.model, "layers", None) or {}).items():
                for key, value in layer.params.items():
                    yield f"histograms/{name}/{key}", to_host(value)
                    # step 0 is before any backward pass: no gradients yet
                    grad = self.grads.get((name, key)) if step > 0 else None
                    if grad is not None:
                        yield f"histograms/{name}/{key}_grad", grad

        writer.add_histograms(arrays(), step)  # one record for the step
