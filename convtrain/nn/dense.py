"""Fully connected layer (``type: dense``)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from convtrain.ops.fast import dense_backward, dense_forward
from convtrain.errors import ConfigError
from convtrain.nn.base import LAYERS, Shape
from convtrain.nn.common import ConcreteLayer
from convtrain.nn.spec import PARAM_LAYER_KEYS, LayerSpec


@LAYERS.register("dense")
class Dense(ConcreteLayer):
    """``y = x @ weight.T + bias`` on ``(N, in_features)`` batches, like ``torch.nn.Linear``.

    Params: ``weight`` ``(out_features, in_features)`` (PyTorch's layout: a ``state_dict``
    loads into ``nn.Linear`` without a transpose) and ``bias`` ``(out_features,)``, zero at start.

    Args:
        in_features, out_features: sizes of the input and output vectors.
        bias: add a learned bias.
        init: initializer name from :mod:`convtrain.nn.init` (fan_in = in, fan_out = out).
        name: the layer's key (``"fc1"``).
        rng: NumPy Generator for the initial weights (a fresh unseeded one if None).
        dtype: float32 (default) or float64.
        where: config path for error messages (set by :meth:`from_config`).

    FLOPs per sample: ``2·in·out`` (+ ``out`` for the bias).
    """

    width_key = "units"

    config_keys = ("units", "init", "bias") + PARAM_LAYER_KEYS
    global_receptive_field = True  # every output sees every input position

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "he_normal", name: str | None = None,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, *,
                 where: str | None = None):
        super().__init__(name, where)
        args = LayerSpec(self.where, "dense", {
            "in_features": in_features, "out_features": out_features, "bias": bias,
            "init": init}, ("in_features", "out_features", "bias", "init"))
        self.in_features = args.integer("in_features")
        self.out_features = args.integer("out_features")
        self.use_bias = args.flag("bias", True)
        self.init = args.text("init", "he_normal")
        self.cache = None
        rng = rng if rng is not None else np.random.default_rng()
        self.init_weight_and_bias((self.out_features, self.in_features), self.init,
                                   self.use_bias, rng, dtype)

    @classmethod
    def from_config(cls, name: str, spec: Mapping[str, Any], input_shape: Shape,
                    defaults: Mapping[str, Any]) -> "Dense":
        """YAML keys: ``units`` (required), ``init``, ``bias``, ``weight_decay_mult``,
        ``trainable``; ``in_features`` comes from the flat ``input_shape`` ``(features,)``."""
        where = f"model.layers.{name}"
        cfg = LayerSpec(where, "dense", spec, cls.config_keys)
        units = cfg.integer("units")
        use_bias = cfg.flag("bias", True)
        init = cfg.text("init", defaults.get("init") or "he_normal")
        options = cfg.param_layer_options()
        if len(input_shape) != 1:
            raise ConfigError(
                f"{where}: dense expects a flat per-sample input (features,), but its input has "
                f"shape {tuple(input_shape)}; add a `flatten` layer before it, e.g. "
                f"flat: {{type: flatten}}")
        layer = cls(int(input_shape[0]), units, bias=use_bias, init=init, name=name,
                    rng=defaults.get("rng"), dtype=defaults.get("dtype", np.float32),
                    where=where)
        return layer.build(input_shape, param_options=options)

    def forward(self, x, training: bool = True):
        """``x`` ``(N, in_features)`` -> ``(N, out_features)``."""
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 2:
            raise ConfigError(
                f"{self.where}: expects batches of flat samples (N, {self.in_features}), got a "
                f"batch of shape {shape}" + ("; add a Flatten layer before it"
                                            if len(shape) > 2 else ""))
        self.check_batch(x, 1, (1, self.in_features), f"({self.in_features},)")
        y, self.cache = dense_forward(x, self.params["weight"], self.params.get("bias"))
        return y

    def backward(self, dy):
        """``dy`` ``(N, out_features)`` -> ``dx`` ``(N, in_features)``; fills ``grads``."""
        if self.cache is None:
            raise ConfigError(f"{self.where}: backward() called before forward()")
        dx, dweight, dbias = dense_backward(dy, self.cache)
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        self.cache = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise ConfigError(f"{self.where}: expects a flat per-sample input "
                              f"({self.in_features},), got shape {tuple(input_shape)}; add a "
                              f"flatten layer before it")
        if input_shape[0] != self.in_features:
            raise ConfigError(f"{self.where}: expects {self.in_features} input features, got "
                              f"per-sample input shape {tuple(input_shape)}")
        return (self.out_features,)

    def flops(self, input_shape: Shape) -> int:
        self.compute_output_shape(tuple(input_shape))
        return 2 * self.in_features * self.out_features + (self.out_features if self.use_bias
                                                           else 0)

    def describe(self) -> str:
        parts = [f"{self.in_features}->{self.out_features}"]
        if not self.use_bias:
            parts.append("no bias")
        if self.init != "he_normal":
            parts.append(self.init)
        return ", ".join(parts)
