"""im2col / col2im and the output-size arithmetic of sliding-window operations.

Column layout: ``cols`` has shape ``(C*kh*kw, N*oh*ow)``; rows are ordered ``(c, i, j)``
(channel-major, then kernel row, then kernel column) and columns ``(n, oh, ow)``. A convolution
is then one GEMM, ``W.reshape(F, C*kh*kw) @ cols``, and the rows of one channel group are one
contiguous block (see :mod:`convtrain.ops.conv`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral
from typing import Any

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_ndim
from convtrain.errors import ConfigError, InternalError


def pair(v: Any, name: str = "value") -> tuple[int, int]:
    """Normalise an int or a 2-sequence of ints to ``(h, w)``.

    Raises:
        ConfigError: for bools, floats, strings, sequences of the wrong length or negative
            numbers, naming ``name`` and the value.
    """
    # Fast paths for what the layers pass on every call (plain ints); isinstance checks
    # against the numbers ABCs cost ~2 us a call, and a convolution makes several.
    if type(v) is int and v >= 0:
        return v, v
    if (type(v) is tuple and len(v) == 2 and type(v[0]) is int and type(v[1]) is int
            and v[0] >= 0 and v[1] >= 0):
        return v
    if isinstance(v, bool):
        raise ConfigError(f"{name} must be an int or a pair of ints (h, w), got bool {v!r}")
    if isinstance(v, Integral):
        values = (v, v)
    elif _is_sequence_like(v):
        # OmegaConf's ListConfig lands here too, so YAML lists from Hydra work.
        try:
            values = tuple(v)
        except TypeError:  # e.g. a 0-d array: has __len__ but cannot be iterated
            raise ConfigError(
                f"{name} must be an int or a pair of ints (h, w), got {v!r}") from None
        if len(values) != 2:
            raise ConfigError(
                f"{name} must be an int or a pair of ints (h, w), got {len(values)} values {v!r}"
            )
    else:
        raise ConfigError(
            f"{name} must be an int or a pair of ints (h, w), got {v!r} ({type(v).__name__})"
        )
    for item in values:
        if isinstance(item, bool) or not isinstance(item, Integral):
            raise ConfigError(
                f"{name} must contain ints, got {item!r} ({type(item).__name__}) in {v!r}"
            )
        if item < 0:
            raise ConfigError(f"{name} must not be negative, got {v!r}")
    return int(values[0]), int(values[1])


def _is_sequence_like(v: Any) -> bool:
    """True for list-like containers (lists, tuples, ListConfig, 1-D arrays), not strings or
    mappings."""
    if isinstance(v, (str, bytes, Mapping)):
        return False
    return hasattr(v, "__len__") and hasattr(v, "__iter__")


def resolve_padding(padding: Any, kernel_size: Any, stride: Any = (1, 1),
                    dilation: Any = (1, 1)) -> tuple[int, int]:
    """Turn ``padding`` (int, ``(ph, pw)``, ``"same"`` or ``"valid"``) into ``(ph, pw)`` ints.

    ``"same"`` keeps ``H`` and ``W`` unchanged. That needs stride 1 and, for symmetric padding,
    an odd effective kernel ``dilation*(k-1)+1`` along each axis.

    Raises:
        ConfigError: negative padding, an unknown string, or an impossible ``"same"``.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return 0, 0
        if mode != "same":
            raise ConfigError(
                f"padding must be an int, a pair (ph, pw), 'same' or 'valid', got {padding!r}"
            )
        kh, kw = pair(kernel_size, "kernel_size")
        sh, sw = pair(stride, "stride")
        dh, dw = pair(dilation, "dilation")
        if (sh, sw) != (1, 1):
            raise ConfigError(
                f"padding='same' needs stride 1 (output size equals input size only then), "
                f"got stride {(sh, sw)}; give an explicit padding instead"
            )
        padding_hw = []
        for axis, k, d in (("height", kh, dh), ("width", kw, dw)):
            effective = d * (k - 1) + 1
            if effective % 2 == 0:
                raise ConfigError(
                    f"padding='same' is impossible along the {axis}: the effective kernel size "
                    f"{effective} (kernel {k}, dilation {d}) is even, so no symmetric padding "
                    f"keeps the size (it would need {effective - 1} padded pixels split evenly); "
                    f"use an odd kernel size or an explicit padding"
                )
            padding_hw.append((effective - 1) // 2)
        return padding_hw[0], padding_hw[1]
    return pair(padding, "padding")


def conv_output_size(in_size: int, kernel: int, stride: int, padding: int,
                     dilation: int = 1) -> int:
    """Output length along one axis: ``floor((in + 2p - d(k-1) - 1) / s) + 1``.

    Raises:
        ConfigError: kernel / stride / dilation < 1, negative padding or input, or a (dilated)
            kernel larger than the padded input. The message gives all the numbers.
    """
    for name, value, minimum in (("input size", in_size, 1), ("kernel size", kernel, 1),
                                 ("stride", stride, 1), ("dilation", dilation, 1),
                                 ("padding", padding, 0)):
        if type(value) is not int and (isinstance(value, bool)
                                       or not isinstance(value, Integral)):
            raise ConfigError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    effective = dilation * (kernel - 1) + 1
    padded = in_size + 2 * padding
    if effective > padded:
        dilated = f" (dilated to {effective} by dilation {dilation})" if dilation != 1 else ""
        raise ConfigError(
            f"kernel size {kernel}{dilated} is larger than the padded input {padded} "
            f"(input {in_size} + 2*padding {padding})"
        )
    out = (padded - effective) // stride + 1
    if out < 1:  # unreachable after the check above; kept so the contract never returns <1
        raise ConfigError(
            f"output size {out} < 1 for input {in_size}, kernel {kernel}, stride {stride}, "
            f"padding {padding}, dilation {dilation}"
        )
    return int(out)


def output_hw(x_shape: Sequence[int], kernel_size: Any, stride: Any, padding: Any,
              dilation: Any = (1, 1)) -> tuple[int, int]:
    """``(oh, ow)`` of a window operation on an input of shape ``(N, C, H, W)``."""
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    oh = conv_output_size(int(x_shape[2]), kh, sh, ph, dh)
    ow = conv_output_size(int(x_shape[3]), kw, sw, pw, dw)
    return oh, ow


def pad_hw(x: Any, padding: tuple[int, int], value: float = 0.0) -> Any:
    """Pad the last two axes of ``(N, C, H, W)`` by ``(ph, pw)`` on both sides with ``value``.

    Allocate-and-assign is used instead of ``xp.pad``, which is several times slower in NumPy.
    Returns ``x`` itself when there is nothing to pad.
    """
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = array_module(x)
    n, c, h, w = x.shape
    padded = xp.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    return padded


def window_slice(offset: int, step: int, count: int, dilation: int = 1) -> slice:
    """Slice of a padded axis touched by kernel offset ``offset`` across ``count`` windows."""
    start = offset * dilation
    return slice(start, start + step * (count - 1) + 1, step)


def im2col(x: Any, kernel_size: Any, stride: Any, padding: Any,
           dilation: Any = (1, 1)) -> Any:
    """Unfold sliding windows into columns.

    Args:
        x: ``(N, C, H, W)``.
        kernel_size, stride, padding, dilation: ints or ``(h, w)`` pairs; padding is zero
            padding of already-resolved ints.

    Returns:
        cols: ``(C*kh*kw, N*oh*ow)`` with rows ordered ``(c, i, j)`` and columns ``(n, oh, ow)``;
        ``cols[(c*kh + i)*kw + j, (n*oh + y)*ow + x] == x_padded[n, c, y*sh + i*dh, x*sw + j*dw]``.
    """
    require_ndim(x, 4, "im2col", "x", "(N, C, H, W)")
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    oh, ow = output_hw(x.shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    xp = array_module(x)
    n, c = x.shape[:2]
    padded = pad_hw(x, (ph, pw))
    s_n, s_c, s_h, s_w = padded.strides  # bytes, in NumPy and CuPy alike
    # A zero-copy 6-D view (C, kh, kw, N, oh, ow) of the padded input; the reshape below is the
    # ONE copy that materialises the columns in GEMM-friendly order.
    windows = xp.lib.stride_tricks.as_strided(
        padded,
        shape=(c, kh, kw, n, oh, ow),
        strides=(s_c, dh * s_h, dw * s_w, s_n, sh * s_h, sw * s_w),
    )
    return windows.reshape(c * kh * kw, n * oh * ow)


def col2im(cols: Any, x_shape: Sequence[int], kernel_size: Any, stride: Any, padding: Any,
           dilation: Any = (1, 1)) -> Any:
    """Fold columns back into an image, summing overlaps: the exact adjoint of :func:`im2col`.

    Args:
        cols: ``(C*kh*kw, N*oh*ow)`` in :func:`im2col`'s layout.
        x_shape: ``(N, C, H, W)`` of the image that was unfolded.

    Returns:
        dx: ``(N, C, H, W)``, contiguous, same dtype as ``cols``.
    """
    require_ndim(cols, 2, "col2im", "cols", "(C*kh*kw, N*oh*ow)")
    if len(x_shape) != 4:
        raise InternalError(f"col2im: x_shape must be (N, C, H, W), got {tuple(x_shape)}")
    n, c, h, w = (int(s) for s in x_shape)
    kh, kw = pair(kernel_size, "kernel_size")
    sh, sw = pair(stride, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    oh, ow = output_hw(x_shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    expected = (c * kh * kw, n * oh * ow)
    if tuple(cols.shape) != expected:
        raise InternalError(
            f"col2im: cols has shape {tuple(cols.shape)} but x_shape {tuple(x_shape)} with "
            f"kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}, dilation {(dh, dw)} "
            f"needs {expected}"
        )
    xp = array_module(cols)
    blocks = cols.reshape(c, kh, kw, n, oh, ow)
    # Accumulated in (C, N, H, W) order, the order of the column blocks, so that every add
    # reads its block contiguously; one transposing copy at the end gives (N, C, H, W).
    dx_padded = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    # Kernel offset (i, j) copied xp[.., u*sh + i*dh, v*sw + j*dw] into its block of rows:
    # one strided add per offset puts the block back (overlapping windows sum).
    for i in range(kh):
        rows = window_slice(i, sh, oh, dh)
        for j in range(kw):
            dx_padded[:, :, rows, window_slice(j, sw, ow, dw)] += blocks[:, i, j]
    return xp.ascontiguousarray(dx_padded[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3))
