"""``feature_maps/<layer>``: what each layer with spatial kernels makes of one fixed image.

The image is :func:`first_image` (logged once as ``feature_maps/input``, step 0); each such
layer's output for it (before its activation) is drawn by
:func:`convtrain.visuals.grids.feature_map_grid`. PNG copies:
``<run>/images/feature_maps/<layer>_epoch<NNN>.png`` and ``.../input.png``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from convtrain.training.hooks import TrainState
from convtrain.visuals.grids import feature_map_grid, image_tile
from convtrain.visuals.hook import VisualHook, period_option, spatial_kernel_layers


def first_image(data: Any) -> np.ndarray | None:
    """The fixed sample for feature maps: the first validation image ``(C, H, W)``, else the
    first test image, else the first training image (None if all splits are empty)."""
    for split in (data.val, data.test, data.train):
        if len(split) > 0:
            return np.asarray(split.x[0])
    return None


class FeatureMaps(VisualHook):
    place = 20
    period = period_option("feature_maps_every_n_epochs", "feature_maps/<conv>: each conv's "
                                                          "output for the first val image")

    def on_fit_start(self, state: TrainState) -> None:
        self.sample = first_image(state.data)
        super().on_fit_start(state)
        # on resume too: a resumed run writes a new event directory, which needs the input
        if (self.every > 0 and self.sample is not None
                and spatial_kernel_layers(state.model) and self.ctx.pictures_wanted):
            self.ctx.write_image("feature_maps", "input", image_tile(self.sample), None)

    def log(self, state: TrainState, step: int) -> None:
        if not self.ctx.pictures_wanted or self.sample is None:
            return
        for name, out in self._outputs(state).items():
            self.ctx.write_image("feature_maps", name, feature_map_grid(out), step)

    def _outputs(self, state: TrainState) -> dict[str, np.ndarray]:
        """Each such layer's output ``(F, oh, ow)`` for the sample, copied to the host (layers
        may reuse their output buffers on the next call)."""
        layers = spatial_kernel_layers(state.model)
        if not layers:
            return {}
        outputs = state.model.layer_outputs(self.sample[None], layers, training=False)
        return {name: np.array(state.backend.to_numpy(y[0]), copy=True)
                for name, y in outputs.items()}
