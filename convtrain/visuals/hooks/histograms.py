"""``histograms/<layer>/<param>``: a histogram of every parameter;
``histograms/<layer>/<param>_grad``: of its gradient on the epoch's last training batch
(epochs >= 1, trainable layers only). One tag group (``histograms``), so TensorBoard's Time
Series keeps them together instead of among the scalar groups."""
from __future__ import annotations

from convtrain.training.hooks import TrainState
from convtrain.visuals.hook import VisualHook, period_option


class Histograms(VisualHook):
    place = 30
    period = period_option("histograms_every_n_epochs", "histograms/<layer>/<param> and "
                                                        "<param>_grad (last batch of the "
                                                        "epoch)")

    def log(self, state: TrainState, step: int) -> None:
        writer, to_host = self.ctx.writer, state.backend.to_numpy
        if not writer.enabled:
            return
        for name, layer in (getattr(state.model, "layers", None) or {}).items():
            for key, value in layer.params.items():
                writer.add_histogram(f"histograms/{name}/{key}", to_host(value), step)
                # step 0 is before any backward pass: no gradients yet
                grad = layer.grads.get(key) \
                    if step > 0 and getattr(layer, "trainable", True) else None
                if grad is not None:
                    writer.add_histogram(f"histograms/{name}/{key}_grad", to_host(grad), step)
