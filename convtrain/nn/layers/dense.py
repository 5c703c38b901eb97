"""Fully connected layer (``type: dense``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from convtrain.ops.fast import dense_backward, dense_forward
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import PARAMETER_OPTIONS, Option


@register_layer("dense")
class Dense(Layer):
    """``y = x @ weight.T + bias`` on ``(N, in_features)`` batches, like ``torch.nn.Linear``.

    Params: ``weight`` ``(out_features, in_features)`` (PyTorch's layout: a ``state_dict``
    loads into ``nn.Linear`` without a transpose) and ``bias`` ``(out_features,)``, zero at start.

    Args: the ``options`` below, and
        name: the layer's key (``"fc1"``).
        rng: NumPy Generator for the initial weights (a fresh unseeded one if None).
        dtype: float32 (default) or float64.
        where: config path for error messages (set by :meth:`from_config`).

    FLOPs per sample: ``2·in·out`` (+ ``out`` for the bias).
    """

    options = (
        Option("in_features", "int", "length of the input vector", config=False, input_axis=0),
        Option("units", "int", "length of the output vector", argument="out_features"),
        Option("bias", "flag", "add a learned bias", attribute="use_bias"),
        Option("init", "name", "initializer (convtrain.nn.init; fan_in = in, fan_out = out)",
               model_default="init"),
    ) + PARAMETER_OPTIONS
    input_rank = 1
    input_layout = "flat per-sample input (features,)"
    input_hint = "add a `flatten` layer before it, e.g. flat: {type: flatten}"
    width_key = "units"
    global_receptive_field = True  # every output sees every input position

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "he_normal", name: str | None = None,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, *,
                 where: str | None = None):
        super().__init__(name, where)
        self.set_options(locals())
        self.cache = None
        rng = rng if rng is not None else np.random.default_rng()
        self.init_weight_and_bias((self.out_features, self.in_features), self.init,
                                  self.use_bias, rng, dtype)

    def forward(self, x, training: bool = True):
        """``x`` ``(N, in_features)`` -> ``(N, out_features)``."""
        self.check_batch(x, 1, (1, self.in_features), f"({self.in_features},)")
        y, self.cache = dense_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def backward(self, dy):
        """``dy`` ``(N, out_features)`` -> ``dx`` ``(N, in_features)``; fills ``grads``."""
        dx, dweight, dbias = dense_backward(dy, self.require_cache(self.cache))
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        self.cache = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        self.check_leading_size(input_shape, self.in_features, "input features")
        return (self.out_features,)

    def flops(self, input_shape: Shape) -> int:
        self.compute_output_shape(tuple(input_shape))
        return 2 * self.in_features * self.out_features + (self.out_features if self.use_bias
                                                           else 0)

    def describe(self) -> str:
        parts = [f"{self.in_features}->{self.out_features}"]
        if not self.use_bias:
            parts.append("no bias")
        if self.init != self.option_default("init"):
            parts.append(self.init)
        return ", ".join(parts)
