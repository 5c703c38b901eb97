"""2-D convolution (cross-correlation, as in every deep-learning library) via im2col + GEMM.

Forward:  ``Y_mat (F, N*oh*ow) = W_mat (F, C*kh*kw) @ cols (C*kh*kw, N*oh*ow)``.
Backward: ``dW_mat = dY_mat @ cols.T`` and ``dcols = W_mat.T @ dY_mat`` folded by col2im.
Grouped convolutions run one GEMM per group on the group's contiguous block of column rows.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

from convtrain.backend import array_module
from convtrain.engine._checks import require_float, require_ndim, require_same_dtype, require_shape
from convtrain.engine.im2col import col2im, im2col, output_hw, pair
from convtrain.errors import ConfigError

_OP = "conv2d"


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs from the forward pass."""

    cols: Any  # (C*kh*kw, N*oh*ow)
    weight: Any  # (F, C//groups, kh, kw)
    x_shape: tuple[int, int, int, int]
    has_bias: bool
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    out_hw: tuple[int, int]


def _check_groups(groups: Any, in_channels: int, weight_shape: tuple[int, ...]) -> int:
    if isinstance(groups, bool) or not isinstance(groups, Integral) or groups < 1:
        raise ConfigError(f"{_OP}: groups must be a positive int, got {groups!r}")
    filters, per_group = weight_shape[0], weight_shape[1]
    if in_channels % groups != 0:
        raise ConfigError(
            f"{_OP}: input channels {in_channels} are not divisible by groups {groups}"
        )
    if filters % groups != 0:
        raise ConfigError(f"{_OP}: filters {filters} are not divisible by groups {groups}")
    if per_group * groups != in_channels:
        raise ConfigError(
            f"{_OP}: input has {in_channels} channels but weight {tuple(weight_shape)} expects "
            f"{per_group} per group x groups {groups} = {per_group * groups}"
        )
    return int(groups)


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = (1, 1),
                   padding: Any = (0, 0), dilation: Any = (1, 1),
                   groups: int = 1) -> tuple[Any, ConvCache]:
    """Convolve a batch.

    Args:
        x: ``(N, C, H, W)`` float32/float64.
        weight: ``(F, C//groups, kh, kw)``, same dtype as ``x``.
        bias: ``(F,)`` or None.
        stride, padding, dilation: ints or ``(h, w)`` pairs; padding is already resolved ints.
        groups: input and output channels are split into this many independent groups.

    Returns:
        ``(y, cache)`` with ``y`` of shape ``(N, F, oh, ow)`` and dtype of ``x``.
    """
    require_ndim(x, 4, _OP, "x", "(N, C, H, W)")
    require_ndim(weight, 4, _OP, "weight", "(F, C//groups, kh, kw)")
    require_float(x, _OP, "x")
    require_same_dtype(_OP, "x", x, weight=weight, bias=bias)
    n, c = int(x.shape[0]), int(x.shape[1])
    filters, per_group, kh, kw = (int(s) for s in weight.shape)
    groups = _check_groups(groups, c, tuple(weight.shape))
    if bias is not None:
        require_shape(bias, (filters,), _OP, "bias")
    stride, padding, dilation = pair(stride, "stride"), pair(padding, "padding"), pair(
        dilation, "dilation")
    oh, ow = output_hw(x.shape, (kh, kw), stride, padding, dilation)

    xp = array_module(x)
    cols = im2col(x, (kh, kw), stride, padding, dilation)
    w_mat = weight.reshape(filters, per_group * kh * kw)
    if groups == 1:
        y_mat = w_mat @ cols
    else:
        y_mat = xp.empty((filters, n * oh * ow), dtype=x.dtype)
        rows, outs = per_group * kh * kw, filters // groups
        for g in range(groups):
            out_block, row_block = slice(g * outs, (g + 1) * outs), slice(g * rows, (g + 1) * rows)
            # Row blocks of C-contiguous matrices are contiguous: the GEMM writes in place.
            xp.matmul(w_mat[out_block], cols[row_block], out=y_mat[out_block])
    if bias is not None:
        y_mat += bias[:, None]
    # Columns are ordered (n, oh, ow); one transpose-copy gives the public (N, F, oh, ow).
    y = xp.ascontiguousarray(y_mat.reshape(filters, n, oh, ow).transpose(1, 0, 2, 3))
    cache = ConvCache(cols, weight, (n, c, int(x.shape[2]), int(x.shape[3])), bias is not None,
                      stride, padding, dilation, groups, (oh, ow))
    return y, cache


def conv2d_backward(dy: Any, cache: ConvCache) -> tuple[Any, Any, Any]:
    """Gradients of a convolution.

    Args:
        dy: ``(N, F, oh, ow)``, gradient of the loss w.r.t. the forward output.
        cache: from :func:`conv2d_forward`.

    Returns:
        ``(dx, dweight, dbias)`` shaped like ``x``, ``weight`` and ``bias``; ``dbias`` is None
        when the forward pass had no bias.
    """
    cols, weight = cache.cols, cache.weight
    n = cache.x_shape[0]
    filters, per_group, kh, kw = (int(s) for s in weight.shape)
    require_ndim(dy, 4, f"{_OP} backward", "dy", "(N, F, oh, ow)")
    require_shape(dy, (n, filters, *cache.out_hw), f"{_OP} backward", "dy")
    require_same_dtype(f"{_OP} backward", "the forward input", cols, dy=dy)
    xp = array_module(dy)
    dy_mat = dy.transpose(1, 0, 2, 3).reshape(filters, -1)
    dbias = dy.sum(axis=(0, 2, 3)) if cache.has_bias else None
    w_mat = weight.reshape(filters, per_group * kh * kw)
    groups = cache.groups
    if groups == 1:
        dweight = (dy_mat @ cols.T).reshape(weight.shape)
        dcols = w_mat.T @ dy_mat
    else:
        rows, outs = per_group * kh * kw, filters // groups
        dweight = xp.empty(weight.shape, dtype=weight.dtype)
        dw_mat = dweight.reshape(filters, rows)
        dcols = xp.empty(cols.shape, dtype=cols.dtype)
        for g in range(groups):
            out_block, row_block = slice(g * outs, (g + 1) * outs), slice(g * rows, (g + 1) * rows)
            xp.matmul(dy_mat[out_block], cols[row_block].T, out=dw_mat[out_block])
            xp.matmul(w_mat[out_block].T, dy_mat[out_block], out=dcols[row_block])
    dx = col2im(dcols, cache.x_shape, (kh, kw), cache.stride, cache.padding, cache.dilation)
    return dx, dweight, dbias
