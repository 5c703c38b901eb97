"""``kernels/<layer>``: the filters of every layer with spatial kernels, as a grid picture.

Drawn by :func:`convtrain.visuals.grids.kernel_grid`: RGB tiles only for the first layer when it
reads the 3-channel input image; grey tiles otherwise. PNG copies:
``<run>/images/kernels/<layer>_epoch<NNN>.png``.
"""
from __future__ import annotations

from typing import Any

from convtrain.errors import ConfigError
from convtrain.training.hooks import TrainState
from convtrain.visuals.grids import SCALINGS, kernel_grid
from convtrain.visuals.hook import Option, VisualHook, period_option, spatial_kernel_layers


def _scaling(key: str, value: Any) -> str:
    if value not in SCALINGS:
        raise ConfigError(f"{key}: expected one of {', '.join(SCALINGS)}, got {value!r}")
    return str(value)


class Kernels(VisualHook):
    place = 10
    period = period_option("kernels_every_n_epochs", "kernels/<conv>: filter grid of every "
                                                     "conv layer")
    options = (Option("kernel_scaling", "per_filter", str, _scaling,
                      "per_filter (min..max of each filter) | symmetric (0 = mid-grey)"),)

    def log(self, state: TrainState, step: int) -> None:
        if not self.ctx.pictures_wanted:
            return
        layers = spatial_kernel_layers(state.model)
        for name, layer in layers.items():
            weight = state.backend.to_numpy(layer.params["weight"])
            grid = kernel_grid(weight, scaling=self.ctx.settings.kernel_scaling,
                               rgb=name == _rgb_layer(state.model, layers))
            self.ctx.write_image("kernels", name, grid, step)


def _rgb_layer(model: Any, layers: dict[str, Any]) -> str | None:
    """The first layer, if it has kernels whose filters read all 3 channels of the input
    image: its tiles are colours. A later layer's 3 input channels are filters, not colours,
    and a grouped first layer's filters see one channel each (grey tiles)."""
    first = next(iter(getattr(model, "layers", None) or {}), None)
    shape = getattr(model, "input_shape", None)
    if first not in layers or not shape or int(shape[0]) != 3:
        return None
    return first if int(layers[first].params["weight"].shape[1]) == 3 else None
