"""Max and average pooling layers (``type: maxpool2d`` / ``avgpool2d``)."""
from __future__ import annotations

from typing import Any

from convtrain.ops.fast import maxpool2d_backward, maxpool2d_forward
from convtrain.ops.pool import avgpool2d_backward, avgpool2d_forward, pool_padding_problem
from convtrain.errors import ConfigError
from convtrain.nn.base import Layer, Shape, register_layer
from convtrain.nn.options import Option, format_pair, format_padding, key_path
from convtrain.nn.windows import resolve_layer_padding, window_output_size


#: the options both pooling layers share.
WINDOW_OPTIONS = (
    Option("kernel_size", "pair", "window height and width"),
    Option("stride", "pair", "step between windows (default: the kernel size)"),
    Option("padding", "padding", "padding around the input: int, [h, w], same or valid",
           attribute="padding_spec"),
)


class _Pool2d(Layer):
    """Shared geometry of the pooling layers (PyTorch semantics, floor output size).

    Options (:data:`WINDOW_OPTIONS`): ``kernel_size`` (int or ``(kh, kw)``); ``stride`` (int or
    ``(sh, sw)``; None means ``kernel_size``: non-overlapping windows); ``padding`` (int,
    ``(ph, pw)``, ``"same"`` (stride 1, odd kernel) or ``"valid"``; at most half the kernel, as
    in PyTorch, so that no window lies entirely in the padding).

    FLOPs per sample: ``kh·kw`` operations (comparisons or additions) per output element.
    """

    input_rank = 3
    input_layout = "per-sample input (C, H, W)"

    def set_geometry(self) -> None:
        """Resolve the stride and padding from the checked options."""
        if self.stride is None:
            self.stride = self.kernel_size
        self.padding = resolve_layer_padding(self.where, self.padding_spec, self.kernel_size,
                                             self.stride, (1, 1))
        if pool_padding_problem(self.kernel_size, self.padding):
            # the engine's rule (PyTorch's), reported with the config key and both axes
            raise ConfigError(f"{key_path(self.where, 'padding')}: padding "
                              f"{format_padding(self.padding)} must be at most half the "
                              f"kernel size {format_pair(self.kernel_size)}")
        self.cache = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        oh, ow = window_output_size(self.where, input_shape, self.kernel_size, self.stride,
                                    self.padding)
        return (input_shape[0], oh, ow)

    def flops(self, input_shape: Shape) -> int:
        channels, oh, ow = self.compute_output_shape(tuple(input_shape))
        return channels * oh * ow * self.kernel_size[0] * self.kernel_size[1]

    def receptive_field_step(self):
        return ((self.kernel_size[0], self.stride[0], 1), (self.kernel_size[1], self.stride[1], 1))

    def describe(self) -> str:
        padding = (self.padding_spec if isinstance(self.padding_spec, str)
                   else f"p{format_padding(self.padding)}")
        return f"{format_pair(self.kernel_size)}, s{format_padding(self.stride)}, {padding}"

    def backward(self, dy):
        """``dy`` ``(N, C, oh, ow)`` -> ``dx`` ``(N, C, H, W)``."""
        dx = self._backward(dy, self.require_cache(self.cache))
        self.cache = None
        return dx


@register_layer("maxpool2d")
class MaxPool2d(_Pool2d):
    """Max over each window, like ``torch.nn.MaxPool2d`` (padding never wins the max; ties
    send the gradient to the first maximum in row-major window order)."""

    options = WINDOW_OPTIONS
    takes_window_maximum = True

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.set_options(locals())
        self.set_geometry()

    def forward(self, x, training: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, C, oh, ow)``."""
        self.check_batch(x, 3, what="(C, H, W)")
        y, self.cache = maxpool2d_forward(x, self.kernel_size, self.stride, self.padding)
        return y

    _backward = staticmethod(maxpool2d_backward)


@register_layer("avgpool2d")
class AvgPool2d(_Pool2d):
    """Mean over each window, like ``torch.nn.AvgPool2d``; padding counts as zeros, and
    ``count_include_pad=False`` divides by the number of real pixels in each window."""

    options = WINDOW_OPTIONS + (
        Option("count_include_pad", "flag", "padding counts in each window's divisor"),
    )

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True, name: str | None = None, *,
                 where: str | None = None):
        super().__init__(name, where)
        self.set_options(locals())
        self.set_geometry()

    def forward(self, x, training: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, C, oh, ow)``."""
        self.check_batch(x, 3, what="(C, H, W)")
        y, self.cache = avgpool2d_forward(x, self.kernel_size, self.stride, self.padding,
                                          self.count_include_pad)
        return y

    _backward = staticmethod(avgpool2d_backward)

    def describe(self) -> str:
        text = super().describe()
        return text if self.count_include_pad else text + ", exclude pad"
