"""Batch normalisation layer (``type: batchnorm2d``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from convtrain.ops.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import PARAMETER_OPTIONS, Option


@register_layer("batchnorm2d")
class BatchNorm2d(Layer):
    """Per-channel batch normalisation of ``(N, C, H, W)``, like ``torch.nn.BatchNorm2d``.

    Training normalises with the batch statistics and moves the running ones by
    ``new = (1 - momentum)·old + momentum·batch`` (unbiased variance); evaluation
    (``training=False``) uses the running statistics and leaves them alone.

    Params ``weight`` (gamma, ones) and ``bias`` (beta, zeros), buffers ``running_mean``
    (zeros) and ``running_var`` (ones), all ``(C,)``: PyTorch's names, so a ``state_dict``
    loads into ``nn.BatchNorm2d`` (which fills in its ``num_batches_tracked``). Weight decay
    never applies to them (``decayed_params`` is empty).

    FLOPs per sample: 2 per element (the normalisation folded into one scale and one shift).
    """

    options = (
        Option("num_features", "int", "channels C", config=False, input_axis=0),
        Option("momentum", "number", "weight of the batch in the running statistics",
               low=0.0, high=1.0, expected="in [0, 1]"),
        Option("eps", "number", "added to the variance before the square root",
               low=0.0, low_open=True, expected="> 0"),
    ) + PARAMETER_OPTIONS
    input_rank = 3
    input_layout = "per-sample input (C, H, W)"
    uses_batch_statistics = True
    decayed_params = ()

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5,
                 name: str | None = None, dtype: Any = np.float32, *,
                 where: str | None = None):
        super().__init__(name, where)
        self.set_options(locals())
        channels = (self.num_features,)
        self.params["weight"] = np.ones(channels, dtype=dtype)
        self.params["bias"] = np.zeros(channels, dtype=dtype)
        self.grads["weight"] = np.zeros(channels, dtype=dtype)
        self.grads["bias"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_mean"] = np.zeros(channels, dtype=dtype)
        self.buffers["running_var"] = np.ones(channels, dtype=dtype)
        self.cache = None

    def forward(self, x, training: bool = True):
        """``x`` ``(N, C, H, W)`` -> same shape; updates the running statistics in training."""
        self.check_batch(x, 3, (1, self.num_features), f"(C={self.num_features}, H, W)")
        y, self.cache, running_mean, running_var = batchnorm2d_forward(
            x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
            self.buffers["running_var"], self.momentum, self.eps, training)
        self.buffers["running_mean"] = running_mean
        self.buffers["running_var"] = running_var
        return y

    def backward(self, dy):
        """``dy`` ``(N, C, H, W)`` -> ``dx``; fills ``grads`` (through the batch statistics
        when the forward pass was in training mode)."""
        dx, dgamma, dbeta = batchnorm2d_backward(dy, self.require_cache(self.cache))
        self.grads["weight"], self.grads["bias"] = dgamma, dbeta
        self.cache = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        self.check_leading_size(input_shape, self.num_features, "channels")
        return tuple(input_shape)

    def flops(self, input_shape: Shape) -> int:
        channels, height, width = self.compute_output_shape(tuple(input_shape))
        return 2 * channels * height * width

    def describe(self) -> str:
        return f"momentum {self.momentum:g}, eps {self.eps:g}"
