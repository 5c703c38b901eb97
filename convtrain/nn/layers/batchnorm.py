"""Batch normalisation layers (``type: batchnorm2d`` for ``(C, H, W)`` maps, ``type:
batchnorm1d`` for ``(F,)`` features)."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from convtrain.ops.fast.batchnorm import (batchnorm1d_backward, batchnorm1d_forward,
                                          batchnorm2d_backward, batchnorm2d_forward)
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import PARAMETER_OPTIONS, Option


class _BatchNorm(Layer):
    """Per-channel (per-feature) batch normalisation with the engine's ``forward_fn`` /
    ``backward_fn`` (the CPU speed path of ``ops/fast/batchnorm.py``, which hands non-NumPy
    arrays to the reference ``ops/batchnorm.py``); the subclasses say which input they take.

    Training normalises with the batch statistics and moves the running ones by
    ``new = (1 - momentum)·old + momentum·batch`` (unbiased variance); evaluation
    (``training=False``) uses the running statistics and leaves them alone.

    Params ``weight`` (gamma, ones) and ``bias`` (beta, zeros), buffers ``running_mean``
    (zeros) and ``running_var`` (ones), all ``(C,)``: PyTorch's names, so a ``state_dict``
    loads into ``nn.BatchNorm2d`` / ``nn.BatchNorm1d`` (which fill in their
    ``num_batches_tracked``). Weight decay never applies to them (``decayed_params`` is empty).

    FLOPs per sample: 2 per element (the normalisation folded into one scale and one shift).
    """

    options = (
        Option("num_features", "int", "channels C (features F)", config=False, input_axis=0),
        Option("momentum", "number", "weight of the batch in the running statistics",
               low=0.0, high=1.0, expected="in [0, 1]"),
        Option("eps", "number", "added to the variance before the square root",
               low=0.0, low_open=True, expected="> 0"),
    ) + PARAMETER_OPTIONS
    uses_batch_statistics = True
    decayed_params = ()
    forward_fn: ClassVar[Callable[..., Any]]
    backward_fn: ClassVar[Callable[..., Any]]
    #: how the per-sample input reads in messages, with C filled in: "(C=4, H, W)"
    batch_layout: ClassVar[str]
    #: what ``num_features`` counts, in messages
    unit: ClassVar[str]

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
        """``x`` -> same shape; updates the running statistics in training."""
        self.check_batch(x, self.input_rank, (1, self.num_features),
                         self.batch_layout.format(self.num_features))
        y, self.cache, running_mean, running_var = type(self).forward_fn(
            x, self.params["weight"], self.params["bias"], self.buffers["running_mean"],
            self.buffers["running_var"], self.momentum, self.eps, training)
        self.buffers["running_mean"] = running_mean
        self.buffers["running_var"] = running_var
        return y

    def backward(self, dy):
        """``dy`` -> ``dx``; fills ``grads`` (through the batch statistics when the forward
        pass was in training mode)."""
        dx, dgamma, dbeta = type(self).backward_fn(dy, self.require_cache(self.cache))
        self.grads["weight"], self.grads["bias"] = dgamma, dbeta
        self.cache = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        self.check_leading_size(input_shape, self.num_features, self.unit)
        return tuple(input_shape)

    def flops(self, input_shape: Shape) -> int:
        count = 1
        for size in self.compute_output_shape(tuple(input_shape)):
            count *= int(size)
        return 2 * count

    def describe(self) -> str:
        return f"momentum {self.momentum:g}, eps {self.eps:g}"


@register_layer("batchnorm2d")
class BatchNorm2d(_BatchNorm):
    """Per-channel batch normalisation of ``(N, C, H, W)`` over ``(N, H, W)``, like
    ``torch.nn.BatchNorm2d`` (see the base class for the statistics, params and buffers)."""

    input_rank = 3
    input_layout = "per-sample input (C, H, W)"
    input_hint = "use batchnorm1d after flatten or dense layers"
    batch_layout = "(C={}, H, W)"
    unit = "channels"
    forward_fn = staticmethod(batchnorm2d_forward)
    backward_fn = staticmethod(batchnorm2d_backward)


@register_layer("batchnorm1d")
class BatchNorm1d(_BatchNorm):
    """Per-feature batch normalisation of ``(N, F)`` over the batch, like
    ``torch.nn.BatchNorm1d`` on 2-D input: after a ``flatten`` or a ``dense`` layer (see the
    base class for the statistics, params and buffers). Training needs batches of 2 or more
    samples; the trainer's drop-last policy sees to it (``uses_batch_statistics``)."""

    input_rank = 1
    input_layout = "flat per-sample input (features,)"
    input_hint = "use batchnorm2d on (C, H, W) feature maps, or add a `flatten` layer before it"
    batch_layout = "({},)"
    unit = "features"
    forward_fn = staticmethod(batchnorm1d_forward)
    backward_fn = staticmethod(batchnorm1d_backward)
