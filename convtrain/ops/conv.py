"""2-D convolution: the math, read in one place (what CuPy runs; the reference the CPU speed
paths of :mod:`convtrain.ops.fast` are tested against).

Shapes: input ``x (N, C, H, W)``, weight ``w (F, C/groups, kh, kw)``, bias ``b (F,)``, output
``y (N, F, oh, ow)`` with, along each axis (stride ``s``, zero padding ``p``, dilation ``d``)::

    oh = floor((H + 2*ph - dh*(kh - 1) - 1) / sh) + 1        (ow likewise)

Forward (a cross-correlation, as in every deep-learning library; ``xp`` is ``x`` zero-padded,
and filter ``f`` sees only the ``C/groups`` channels ``c`` of its group)::

    y[n, f, u, v] = b[f] + sum_{c, i, j} w[f, c, i, j] * xp[n, c, u*sh + i*dh, v*sw + j*dw]

im2col turns the sum into one matrix product. Every window becomes a column::

    cols (C*kh*kw, N*oh*ow):  cols[(c, i, j), (n, u, v)] = xp[n, c, u*sh + i*dh, v*sw + j*dw]

so that, with ``W_mat = w.reshape(F, C/groups*kh*kw)`` and one GEMM per group (a group's
filters times its channels' block of rows)::

    Y_mat (F, N*oh*ow) = W_mat @ cols  (+ b per row),    y = Y_mat as (N, F, oh, ow)

Backward, from ``dY_mat (F, N*oh*ow)`` (``dy`` in the same layout), per group::

    db = dY_mat summed over its columns
    dW_mat = dY_mat @ cols.T                      (F, C/groups*kh*kw)
    dcols  = W_mat.T @ dY_mat                     (C*kh*kw, N*oh*ow)
    dx = col2im(dcols)   every entry added back onto the input pixel it was copied from

:func:`conv2d_naive` is the first formula written as loops, for learners and tests.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any, NamedTuple

from convtrain.errors import InternalError
from convtrain.ops._checks import require_float, require_ndim, require_same_dtype, require_shape
from convtrain.ops.im2col import col2im, im2col, output_hw, pad_hw, pair
from convtrain.runtime.backend import array_module

_OP = "conv2d"


class ConvArguments(NamedTuple):
    """The checked window parameters of one call, all ``(h, w)`` pairs of ints."""

    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]
    groups: int


def check_conv_arguments(x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                         dilation: Any, groups: Any) -> ConvArguments:
    """Check the arrays and window parameters of a convolution (shared with the fast paths).

    Raises:
        InternalError: arrays of the wrong rank, dtype or shape, or groups that do not divide
            the channels (the layer checks its config before any array reaches here).
        ConfigError: window parameters no output fits (from :func:`output_hw`).
    """
    require_ndim(x, 4, _OP, "x", "(N, C, H, W)")
    require_ndim(weight, 4, _OP, "weight", "(F, C//groups, kh, kw)")
    require_float(x, _OP, "x")
    require_same_dtype(_OP, "x", x, weight=weight, bias=bias)
    channels, filters, per_group = int(x.shape[1]), int(weight.shape[0]), int(weight.shape[1])
    if isinstance(groups, bool) or not isinstance(groups, Integral) or groups < 1:
        raise InternalError(f"{_OP}: groups must be a positive int, got {groups!r}")
    if channels % groups != 0:
        raise InternalError(f"{_OP}: input channels {channels} are not divisible by groups "
                            f"{groups}")
    if filters % groups != 0:
        raise InternalError(f"{_OP}: filters {filters} are not divisible by groups {groups}")
    if per_group * groups != channels:
        raise InternalError(
            f"{_OP}: input has {channels} channels but weight {tuple(weight.shape)} expects "
            f"{per_group} per group x groups {groups} = {per_group * groups}")
    if bias is not None:
        require_shape(bias, (filters,), _OP, "bias")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    dilation = pair(dilation, "dilation")
    out_hw = output_hw(x.shape, weight.shape[2:], stride, padding, dilation)
    return ConvArguments(stride, padding, dilation, out_hw, int(groups))


class ConvCache(NamedTuple):
    """What :func:`conv2d_backward` needs from the forward pass."""

    x_shape: tuple[int, int, int, int]
    cols: Any  # (C*kh*kw, N*oh*ow)
    weight: Any  # (F, C/groups, kh, kw)
    has_bias: bool
    args: ConvArguments


def conv2d_forward(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                   dilation: Any = 1, groups: int = 1) -> tuple[Any, ConvCache]:
    """``y (N, F, oh, ow)`` of ``x (N, C, H, W)`` and ``weight (F, C/groups, kh, kw)``, plus
    the cache for :func:`conv2d_backward`. ``stride``, ``padding`` (resolved ints) and
    ``dilation`` are ints or ``(h, w)`` pairs."""
    args = check_conv_arguments(x, weight, bias, stride, padding, dilation, groups)
    xp = array_module(x)
    n, filters = int(x.shape[0]), int(weight.shape[0])
    oh, ow = args.out_hw
    cols = im2col(x, weight.shape[2:], args.stride, args.padding, args.dilation)
    w_mat = weight.reshape(filters, -1)  # (F, C/groups*kh*kw)
    y_mat = xp.empty((filters, n * oh * ow), dtype=x.dtype)
    for rows, filt in group_blocks(cols.shape[0], filters, args.groups):
        xp.matmul(w_mat[filt], cols[rows], out=y_mat[filt])
    if bias is not None:
        y_mat += bias[:, None]
    y = xp.ascontiguousarray(y_mat.reshape(filters, n, oh, ow).transpose(1, 0, 2, 3))
    return y, ConvCache(tuple(int(s) for s in x.shape), cols, weight, bias is not None, args)


def conv2d_backward(dy: Any, cache: ConvCache, input_grad: bool = True) -> tuple[Any, Any, Any]:
    """Gradients ``(dx, dweight, dbias)`` from ``dy (N, F, oh, ow)``, shaped like ``x``,
    ``weight`` and the bias (None without one). ``input_grad=False`` skips ``dx`` (None)."""
    weight, args = cache.weight, cache.args
    filters = int(weight.shape[0])
    n = cache.x_shape[0]
    require_shape(dy, (n, filters, *args.out_hw), f"{_OP} backward", "dy")
    require_same_dtype(f"{_OP} backward", "the forward input", weight, dy=dy)
    xp = array_module(dy)
    dy_mat = dy.transpose(1, 0, 2, 3).reshape(filters, -1)  # (F, N*oh*ow)
    dbias = dy_mat.sum(axis=1) if cache.has_bias else None
    w_mat = weight.reshape(filters, -1)
    dw_mat = xp.empty(w_mat.shape, dtype=dy.dtype)
    blocks = group_blocks(cache.cols.shape[0], filters, args.groups)
    for rows, filt in blocks:
        xp.matmul(dy_mat[filt], cache.cols[rows].T, out=dw_mat[filt])
    dx = None
    if input_grad:
        dcols = xp.empty(cache.cols.shape, dtype=dy.dtype)
        for rows, filt in blocks:
            xp.matmul(w_mat[filt].T, dy_mat[filt], out=dcols[rows])
        dx = col2im(dcols, cache.x_shape, weight.shape[2:], args.stride, args.padding,
                    args.dilation)
    return dx, dw_mat.reshape(weight.shape), dbias


def group_blocks(rows: int, filters: int, groups: int) -> list[tuple[slice, slice]]:
    """``(column rows, filters)`` of each group: the rows are channel-major, so a group's
    channels are one contiguous block of ``rows/groups`` rows."""
    r, f = rows // groups, filters // groups
    return [(slice(k * r, (k + 1) * r), slice(k * f, (k + 1) * f)) for k in range(groups)]


def conv2d_naive(x: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1) -> Any:
    """The forward formula as loops over ``(n, f, u, v)``: slow, for learners and tests."""
    args = check_conv_arguments(x, weight, bias, stride, padding, dilation, groups)
    xp = array_module(x)
    (sh, sw), (dh, dw), (oh, ow) = args.stride, args.dilation, args.out_hw
    n, filters, per_group, kh, kw = x.shape[0], *weight.shape
    padded = pad_hw(x, args.padding)
    y = xp.zeros((n, filters, oh, ow), dtype=x.dtype)
    for s in range(n):
        for f in range(filters):
            c0 = f // (filters // args.groups) * per_group  # first channel of f's group
            for u in range(oh):
                for v in range(ow):
                    window = padded[s, c0:c0 + per_group,
                                    u * sh:u * sh + dh * (kh - 1) + 1:dh,
                                    v * sw:v * sw + dw * (kw - 1) + 1:dw]
                    y[s, f, u, v] = (window * weight[f]).sum()
            if bias is not None:
                y[s, f] += bias[f]
    return y
