"""Sliding-window geometry shared by the conv and pooling layers, with errors that name the
layer's ``padding`` / ``kernel_size`` keys and the shapes involved."""
from __future__ import annotations

from typing import Any

from convtrain.ops.im2col import resolve_padding
from convtrain.errors import ConfigError
from convtrain.nn.base import Shape
from convtrain.nn.options import format_pair, format_padding, key_path


def resolve_layer_padding(where: str, padding: Any, kernel_size: tuple[int, int],
                          stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """``resolve_padding`` with its error prefixed by the layer's ``padding`` key."""
    try:
        return resolve_padding(padding, kernel_size, stride, dilation)
    except ConfigError as exc:
        raise ConfigError(f"{key_path(where, 'padding')}: {exc}") from None


def window_output_size(where: str, input_shape: Shape, kernel: tuple[int, int],
                       stride: tuple[int, int], padding: tuple[int, int],
                       dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    """``(oh, ow)`` of a sliding window over ``input_shape`` ``(C, H, W)``, floor mode.

    Raises:
        ConfigError: naming ``<where>.kernel_size`` when the (dilated) kernel does not fit
            into the padded input, with the input shape and padding.
    """
    height, width = input_shape[1], input_shape[2]
    effective = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    padded = (height + 2 * padding[0], width + 2 * padding[1])
    if effective[0] > padded[0] or effective[1] > padded[1]:
        dilation_text = format_pair(dilation) if dilation[0] != dilation[1] else dilation[0]
        raise ConfigError(
            f"{key_path(where, 'kernel_size')}: kernel {format_pair(kernel)} (dilation "
            f"{dilation_text}) is larger than the padded input {format_pair(padded)} "
            f"(input shape {tuple(input_shape)}, padding {format_padding(padding)})")
    return tuple((p - e) // s + 1 for p, e, s in zip(padded, effective, stride))
