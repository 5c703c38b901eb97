"""``kernels/<conv>``: the filters of every layer with spatial kernels, as a grid picture.

Drawn by :func:`convtrain.visuals.grids.kernel_grid` (geometry, colours and which filters and
channels are shown are documented there): a diverging colour map by default (0 white, positive
red, negative blue), one labelled cell per filter (at most ``logger.kernel_max_filters``, those
of largest norm), each holding the filter's tile (one input channel, or a colour tile for the
first layer on an RGB image) or its ``logger.kernel_top_channels`` strongest input channels.

``logger.kernel_scaling`` sets the colour limit (the weight drawn at full colour):

- ``fixed`` (default): ``logger.kernel_fixed_margin`` x max |w| of the layer's initial weights
  (:mod:`convtrain.visuals.initial_kernels`), the same at every step, so a kernel that grows
  gets more colourful and one that dies fades; weights beyond the limit are drawn at full colour;
- ``layer``: max |w| of the layer at that step (compares filters, hides growth);
- ``per_filter``: max |w| of each filter over all its input channels (shows weak filters).

``kernels_change/<conv>`` (``logger.kernel_change_grid``: at the last epoch by default, or with
every kernels picture from step 1 on): ``|W - W0|``, how far each weight moved from the initial
kernels, colour map ``magnitude`` (white = unchanged, dark
orange = the limit), the filters that moved most. Its limit: under ``fixed`` scaling the one of
``kernels/<conv>`` (a full-colour tile moved by as much as that grid's full colour), under
``layer`` / ``per_filter`` the largest change of the layer / filter.

PNG copies: ``<run>/images/kernels/<layer>_epoch<NNN>.png`` and
``<run>/images/kernels_change/<layer>_epoch<NNN>.png``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
from convtrain import validate
from convtrain.errors import ConfigError
from convtrain.training.hooks import TrainState
from convtrain.visuals.grids import KERNEL_SCALINGS, kernel_grid
from convtrain.visuals.hook import Option, VisualHook, period_option, spatial_kernel_layers
from convtrain.visuals.initial_kernels import (current_kernels, fixed_limit, initial_kernels,
                                               recorded_initial_kernels)

COLORMAPS = ("diverging", "grey")
#: when kernels_change/<conv> is drawn; "last" by default: each grid costs about 4 ms of drawing
#: and PNG encoding, and the change at the end is the one that sums up the run
CHANGE_GRIDS = ("last", "every", "off")


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
        return str(value)
    return check


def _margin(key: str, value: Any) -> float:
    return validate.real(key, value, low=0.0, low_open=True,
                         expected="a number > 0 (the initial max |w| times this is drawn at "
                                  "full colour)")


class Kernels(VisualHook):
    place = 10
    # every 5 epochs (and step 0 and the last epoch): two grids per conv layer cost about as
    # much as an epoch of the default run on digits, and TensorBoard shows 10 images per tag
    period = period_option("kernels_every_n_epochs", "kernels/<conv> and kernels_change/<conv>: "
                                                     "filter grids of every conv layer",
                           default=5)
    options = (
        Option("kernel_scaling", "fixed", str, _choice(KERNEL_SCALINGS),
               "fixed (the same colour limit every epoch: growth shows) | layer | per_filter"),
        Option("kernel_fixed_margin", 1.0, float, _margin,
               "fixed scaling's full colour = this x max |w| of the layer's initial weights"),
        Option("kernel_colormap", "diverging", str, _choice(COLORMAPS),
               "diverging (0 white, + red, - blue) | grey (0 mid-grey, + white, - black)"),
        Option("kernel_max_filters", 32, int, validate.positive_int,
               "filters drawn per layer (those of largest norm)"),
        Option("kernel_top_channels", 2, int, validate.positive_int,
               "input channels drawn per filter (its strongest when it has more)"),
        Option("kernel_change_grid", "last", str, _choice(CHANGE_GRIDS),
               "kernels_change/<conv>, |W - W0|: at the last epoch | with every kernels "
               "picture | off"),
    )

    def on_fit_start(self, state: TrainState) -> None:
        self.reference: dict[str, np.ndarray] = {}
        self.limits: dict[str, float] = {}
        settings = self.ctx.settings
        if self.every > 0 and self.ctx.pictures_wanted and (
                settings.kernel_scaling == "fixed" or settings.kernel_change_grid != "off"):
            self.reference = initial_kernels(self.ctx, state)
        self._set_limits()
        super().on_fit_start(state)

    def inspect(self, state: TrainState, step: int) -> None:
        # the trained run's recorded initial kernels; without them no change grid, and the
        # fixed scaling has no limit: the layer's own (see recorded_initial_kernels)
        self.reference = {}
        if self.ctx.pictures_wanted:
            self.reference = recorded_initial_kernels(self.ctx, state)
        self._set_limits()
        self.log(state, step)

    def _set_limits(self) -> None:
        settings = self.ctx.settings
        self.limits: dict[str, float] = {}
        if settings.kernel_scaling == "fixed":
            self.limits = {name: fixed_limit(w, settings.kernel_fixed_margin)
                           for name, w in self.reference.items()}

    def log(self, state: TrainState, step: int) -> None:
        if not self.ctx.pictures_wanted:
            return
        settings = self.ctx.settings
        rgb = _rgb_layer(state.model, spatial_kernel_layers(state.model))
        for name, weight in current_kernels(state).items():
            # fixed scaling without initial kernels (task=inspect on a run that kept none):
            # the layer's own limit
            scaling = settings.kernel_scaling if name in self.limits or \
                settings.kernel_scaling != "fixed" else "layer"
            grid = kernel_grid(weight, scaling=scaling,
                               limit=self.limits.get(name), colormap=settings.kernel_colormap,
                               rgb=name == rgb, max_filters=settings.kernel_max_filters,
                               top_channels=settings.kernel_top_channels)
            self.ctx.write_image("kernels", name, grid, step)
            if name in self.reference and self._change_due(step, state.max_epochs):
                grid = kernel_grid(weight - self.reference[name],
                                   scaling=scaling, limit=self.limits.get(name),
                                   colormap="magnitude", rgb=False,
                                   max_filters=settings.kernel_max_filters,
                                   top_channels=settings.kernel_top_channels)
                self.ctx.write_image("kernels_change", name, grid, step)

    def _change_due(self, step: int, max_epochs: int) -> bool:
        mode = self.ctx.settings.kernel_change_grid
        if step == 0 or mode == "off":  # at step 0 nothing has moved
            return False
        return mode == "every" or step == max_epochs


def _rgb_layer(model: Any, layers: dict[str, Any]) -> str | None:
    """The first layer, if it has kernels whose filters read all 3 channels of the input
    image: its tiles are colours. A later layer's 3 input channels are filters, not colours,
    and a grouped first layer's filters see one channel each (grey tiles)."""
    first = next(iter(getattr(model, "layers", None) or {}), None)
    shape = getattr(model, "input_shape", None)
    if first not in layers or not shape or int(shape[0]) != 3:
        return None
    return first if int(layers[first].params["weight"].shape[1]) == 3 else None
