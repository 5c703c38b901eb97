"""2-D convolution layer (``type: conv2d``)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from convtrain.ops.fast import conv2d_backward, conv2d_forward
from convtrain.runtime.workspace import Workspace, check_workspace_mb
from convtrain.errors import ConfigError
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import (PARAMETER_OPTIONS, Option, format_pair, format_padding,
                                  key_path)
from convtrain.nn.windows import resolve_layer_padding, window_output_size


def check_groups(where: str, in_channels: int, out_channels: int, groups: int,
                 input_shape: Shape | None = None) -> None:
    """Raise unless both channel counts are divisible by ``groups`` (names ``<where>.groups``)."""
    source = f" (from input shape {tuple(input_shape)})" if input_shape is not None else ""
    if in_channels % groups:
        raise ConfigError(f"{key_path(where, 'groups')}: {in_channels} input channels{source} "
                          f"are not divisible by groups={groups}")
    if out_channels % groups:
        raise ConfigError(f"{key_path(where, 'groups')}: {out_channels} filters are not "
                          f"divisible by groups={groups}")


@register_layer("conv2d")
class Conv2d(Layer):
    """2-D convolution (cross-correlation) on ``(N, C, H, W)`` batches, like ``torch.nn.Conv2d``.

    Params: ``weight`` ``(F, C/groups, kh, kw)`` and ``bias`` ``(F,)`` (PyTorch's names and
    shapes, so a ``state_dict`` loads into ``nn.Conv2d`` unchanged). The bias starts at zero.

    Args: the ``options`` below (``in_channels`` and ``out_channels`` are C and F), and
        name: the layer's key (``"conv1"``).
        rng: NumPy Generator for the initial weights (a fresh unseeded one if None).
        dtype: float32 (default) or float64.
        where: config path for error messages (set by :meth:`from_config`).
        max_workspace_mb: cap on this layer's im2col scratch memory in MiB (None: the
            process-wide :func:`convtrain.runtime.set_max_workspace_mb` setting). Over it the
            batch is processed in chunks of samples; results are unchanged.

    Scratch buffers are kept between calls (reusing them avoids page faults); they are bounded
    by the largest batch seen and by the workspace limit.

    FLOPs per sample: ``2·F·oh·ow·(C/groups)·kh·kw`` (+ ``F·oh·ow`` for the bias).
    """

    options = (
        Option("in_channels", "int", "input channels C", config=False, input_axis=0),
        Option("filters", "int", "number of filters F", argument="out_channels"),
        Option("kernel_size", "pair", "kernel height and width"),
        Option("stride", "pair", "step between windows"),
        Option("padding", "padding", "zeros around the input: int, [h, w], same or valid",
               attribute="padding_spec"),
        Option("dilation", "pair", "spacing between kernel taps"),
        Option("groups", "int", "C and F split into this many independent groups"),
        Option("bias", "flag", "add a learned per-filter bias", attribute="use_bias"),
        Option("init", "name", "initializer (convtrain.nn.init)", model_default="init"),
    ) + PARAMETER_OPTIONS
    input_rank = 3
    input_layout = "per-sample input (C, H, W)"
    input_hint = "a conv layer cannot follow a flatten or dense layer"
    can_skip_input_grad = True
    has_spatial_kernels = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 init: str = "he_normal", name: str | None = None,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32, *,
                 where: str | None = None, max_workspace_mb: float | None = None):
        super().__init__(name, where)
        self.max_workspace_mb = check_workspace_mb(max_workspace_mb,
                                                   f"{self.where}.max_workspace_mb")
        self.workspace = Workspace()
        self.set_options(locals())
        check_groups(self.where, self.in_channels, self.out_channels, self.groups)
        #: ``padding_spec`` is the padding as given (``"same"``, (2, 2), ...) for describe();
        #: ``padding`` the resolved ``(ph, pw)``.
        self.padding = resolve_layer_padding(self.where, self.padding_spec, self.kernel_size,
                                             self.stride, self.dilation)
        self.cache = None
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.init_weight_and_bias(shape, self.init, self.use_bias,
                                  rng if rng is not None else np.random.default_rng(), dtype)

    @classmethod
    def check_arguments(cls, where: str, arguments: Mapping[str, Any], input_shape: Shape) -> None:
        """``groups`` must divide the channels the input shape gives (message names both)."""
        check_groups(where, arguments["in_channels"], arguments["out_channels"],
                     arguments["groups"], input_shape)

    # --- computation -------------------------------------------------------------------
    def forward(self, x, training: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, F, oh, ow)``."""
        self.check_batch(x, 3, (1, self.in_channels), f"(C={self.in_channels}, H, W)")
        # The layer's own buffers serve the training batch, call after call. An evaluation
        # pass (usually 4x that batch) takes throw-away ones: kept, they would grow every conv
        # layer's buffers to the evaluation batch for good (ResNet-20: +1.3 GB).
        y, self.cache = conv2d_forward(x, self.params["weight"], self.params.get("bias"),
                                       self.stride, self.padding, self.dilation, self.groups,
                                       workspace=self.workspace if training else None,
                                       max_workspace_mb=self.max_workspace_mb)
        return y

    def backward(self, dy, input_grad: bool = True):
        """``dy`` ``(N, F, oh, ow)`` -> ``dx`` ``(N, C, H, W)``; fills ``grads``.

        ``input_grad=False`` skips ``dx`` (returns None): a model's first layer needs only
        its weight gradients, like a PyTorch input without ``requires_grad``.
        """
        dx, dweight, dbias = conv2d_backward(dy, self.require_cache(self.cache),
                                             input_grad=input_grad)
        self.grads["weight"] = dweight
        if self.use_bias:
            self.grads["bias"] = dbias
        self.cache = None  # the im2col columns are the largest array of a step: free them now
        return dx

    # --- shapes and description --------------------------------------------------------
    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        self.check_leading_size(input_shape, self.in_channels, "input channels")
        oh, ow = window_output_size(self.where, input_shape, self.kernel_size, self.stride,
                                    self.padding, self.dilation)
        return (self.out_channels, oh, ow)

    def flops(self, input_shape: Shape) -> int:
        _, oh, ow = self.compute_output_shape(tuple(input_shape))
        positions = self.out_channels * oh * ow
        per_output = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        return 2 * positions * per_output + (positions if self.use_bias else 0)

    def receptive_field_step(self):
        return ((self.kernel_size[0], self.stride[0], self.dilation[0]),
                (self.kernel_size[1], self.stride[1], self.dilation[1]))

    def describe(self) -> str:
        parts = [f"{self.out_channels}@{format_pair(self.kernel_size)}",
                 f"s{format_padding(self.stride)}"]
        if isinstance(self.padding_spec, str):
            parts.append(self.padding_spec)
        else:
            parts.append(f"p{format_padding(self.padding)}")
        if self.dilation != (1, 1):
            parts.append(f"d{format_padding(self.dilation)}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if not self.use_bias:
            parts.append("no bias")
        if self.init != self.option_default("init"):
            parts.append(self.init)
        return ", ".join(parts)
