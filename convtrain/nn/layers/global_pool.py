"""Global average pooling layer (``type: global_avgpool2d``): ``(N, C, H, W)`` -> ``(N, C)``."""
from __future__ import annotations

from convtrain.ops.global_pool import global_avgpool2d_backward, global_avgpool2d_forward
from convtrain.nn.base import Layer, Shape, register_layer


@register_layer("global_avgpool2d")
class GlobalAvgPool2d(Layer):
    """The mean of each feature map: per sample ``(C, H, W)`` -> ``(C,)``, so a ``dense`` layer
    can follow directly (no ``flatten``), whatever the image size.

    PyTorch equivalent: ``nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())``. No options,
    no parameters. Every output sees its whole feature map, so ``summary()`` reports the whole
    input as receptive field from here on.

    FLOPs per sample: ``C·H·W`` (one addition per input element; the division by ``H·W`` is
    one multiply per channel, counted too: ``C·H·W + C``).
    """

    input_rank = 3
    input_layout = "per-sample input (C, H, W)"
    input_hint = "global average pooling reduces feature maps, so it goes before flatten/dense"
    global_receptive_field = True

    def __init__(self, name: str | None = None, *, where: str | None = None):
        super().__init__(name, where)
        self.cache = None

    def forward(self, x, training: bool = True):
        """``x`` ``(N, C, H, W)`` -> ``(N, C)``."""
        self.check_batch(x, 3, what="(C, H, W)")
        y, self.cache = global_avgpool2d_forward(x)
        return y

    def backward(self, dy):
        """``dy`` ``(N, C)`` -> ``dx`` ``(N, C, H, W)``."""
        dx = global_avgpool2d_backward(dy, self.require_cache(self.cache))
        self.cache = None
        return dx

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        self.check_input_rank(self.where, input_shape)
        return (input_shape[0],)

    def flops(self, input_shape: Shape) -> int:
        channels, height, width = input_shape
        return channels * height * width + channels
