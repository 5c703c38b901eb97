"""Batch normalisation, PyTorch's semantics: ``batchnorm2d`` per channel of ``(N, C, H, W)``
over ``(N, H, W)`` (``BatchNorm2d``), ``batchnorm1d`` per feature of ``(N, F)`` over the
batch (``BatchNorm1d``). Both are the same math over different axes.

Training normalises with the batch mean and the biased batch variance, and moves the running
statistics towards the batch ones: ``new = (1 - momentum) * old + momentum * batch``, using the
*unbiased* variance for ``running_var``. Evaluation normalises with the running statistics.
"""
from __future__ import annotations

from numbers import Real
from typing import Any, NamedTuple

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_float, require_ndim, require_same_dtype, require_shape
from convtrain.errors import ConfigError


class _Layout(NamedTuple):
    """Where the normalised axis is and which axes the statistics run over."""

    op: str  # the operation's name in messages
    ndim: int
    layout: str  # "(N, C, H, W)"
    unit: str  # "channel" / "feature": what gets one mean and one variance
    reduce_axes: tuple[int, ...]  # the statistics' axes
    expand: tuple[Any, ...]  # index turning a (C,) vector into a broadcastable one


_2D = _Layout("batchnorm2d", 4, "(N, C, H, W)", "channel", (0, 2, 3),
              (None, slice(None), None, None))
_1D = _Layout("batchnorm1d", 2, "(N, F)", "feature", (0,), (None, slice(None)))


class BatchNormCache(NamedTuple):
    x_hat: Any  # normalised input, shaped like x
    gamma: Any  # (C,)
    inv_std: Any  # (C,) 1 / sqrt(var + eps) of the statistics that were used
    training: bool  # True: batch statistics (depend on x); False: constants
    layout: _Layout = _2D


def _check_hyperparameters(op: str, momentum: Any, eps: Any) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, Real) or not 0 <= momentum <= 1:
        raise ConfigError(f"{op}: momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not eps > 0:
        raise ConfigError(f"{op}: eps must be a positive number, got {eps!r}")


def check_forward_arguments(layout: _Layout, x: Any, gamma: Any, beta: Any,
                            running_mean: Any, running_var: Any, momentum: Any, eps: Any,
                            training: bool) -> int:
    """Every check of a forward call (shared with the speed path in ``ops/fast``); returns
    the number of values per channel (feature) the statistics run over."""
    op = layout.op
    require_ndim(x, layout.ndim, op, "x", layout.layout)
    require_float(x, op, "x")
    _check_hyperparameters(op, momentum, eps)
    channels = int(x.shape[1])
    for name, array in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is not None:
            require_shape(array, (channels,), op, name)
    require_same_dtype(op, "x", x, gamma=gamma, beta=beta)
    count = int(x.size // channels) if channels else 0
    if training and count < 2:
        raise ConfigError(
            f"{op}: training needs more than 1 value per {layout.unit} to estimate a "
            f"variance, got input shape {tuple(x.shape)}"
        )
    if not training and (running_mean is None or running_var is None):
        raise ConfigError(f"{op}: evaluation mode needs running_mean and running_var")
    return count


def updated_running_stats(running_mean: Any, running_var: Any, mean: Any, var: Any,
                          count: int, momentum: float) -> tuple[Any, Any]:
    """The running statistics moved towards the batch's ``mean`` and biased ``var`` (over
    ``count`` values): new arrays, the unbiased variance; unchanged when none are kept."""
    if running_mean is None or running_var is None:
        return running_mean, running_var
    unbiased = var * var.dtype.type(count / (count - 1))
    new_mean = (1 - momentum) * running_mean + momentum * mean.astype(running_mean.dtype)
    new_var = (1 - momentum) * running_var + momentum * unbiased.astype(running_var.dtype)
    return new_mean, new_var


def _forward(layout: _Layout, x: Any, gamma: Any, beta: Any, running_mean: Any,
             running_var: Any, momentum: float, eps: float,
             training: bool) -> tuple[Any, BatchNormCache, Any, Any]:
    axes, expand = layout.reduce_axes, layout.expand
    count = check_forward_arguments(layout, x, gamma, beta, running_mean, running_var,
                                    momentum, eps, training)
    xp = array_module(x)
    if training:
        mean = x.mean(axis=axes)
        centered = x - mean[expand]
        var = (centered * centered).mean(axis=axes)
        inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
        x_hat = centered * inv_std[expand]
        new_mean, new_var = updated_running_stats(running_mean, running_var, mean, var, count,
                                                  momentum)
    else:
        mean = running_mean.astype(x.dtype, copy=False)
        inv_std = 1 / xp.sqrt(running_var.astype(x.dtype, copy=False) + x.dtype.type(eps))
        x_hat = (x - mean[expand]) * inv_std[expand]
        new_mean, new_var = running_mean, running_var
    y = x_hat * gamma[expand] + beta[expand]
    return y, BatchNormCache(x_hat, gamma, inv_std, bool(training), layout), new_mean, new_var


def batchnorm2d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                        momentum: float = 0.1, eps: float = 1e-5,
                        training: bool = True) -> tuple[Any, BatchNormCache, Any, Any]:
    """Args:
        x: ``(N, C, H, W)``; gamma, beta, running_mean, running_var: ``(C,)``.
        running_mean / running_var may be None in training mode (no running statistics kept).

    Returns:
        ``(y, cache, new_running_mean, new_running_var)``; the running statistics are new
        arrays (the inputs are not modified), returned unchanged in eval mode and as None when
        none were given.
    """
    return _forward(_2D, x, gamma, beta, running_mean, running_var, momentum, eps, training)


def batchnorm1d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                        momentum: float = 0.1, eps: float = 1e-5,
                        training: bool = True) -> tuple[Any, BatchNormCache, Any, Any]:
    """:func:`batchnorm2d_forward` for ``x`` ``(N, F)``: each feature normalised over the
    batch; gamma, beta, running_mean, running_var: ``(F,)``. Training needs ``N >= 2``."""
    return _forward(_1D, x, gamma, beta, running_mean, running_var, momentum, eps, training)


def _backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    x_hat, gamma, inv_std, layout = cache.x_hat, cache.gamma, cache.inv_std, cache.layout
    axes, expand = layout.reduce_axes, layout.expand
    require_shape(dy, x_hat.shape, f"{layout.op} backward", "dy")
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * x_hat).sum(axis=axes)
    scale = (gamma * inv_std)[expand]
    if not cache.training:
        return dy * scale, dgamma, dbeta
    count = x_hat.size // x_hat.shape[1]
    # dx = gamma/std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means per channel.
    mean_dy = (dbeta / count)[expand]
    mean_dy_xhat = (dgamma / count)[expand]
    dx = scale * (dy - mean_dy - x_hat * mean_dy_xhat)
    return dx, dgamma, dbeta


def batchnorm2d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """Args: ``dy (N, C, H, W)``.

    Returns:
        ``(dx (N, C, H, W), dgamma (C,), dbeta (C,))``. In training mode ``dx`` includes the
        paths through the batch mean and variance.
    """
    return _backward(dy, cache)


def batchnorm1d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """``dy (N, F)`` -> ``(dx (N, F), dgamma (F,), dbeta (F,))``, like
    :func:`batchnorm2d_backward` (through the batch statistics in training mode)."""
    return _backward(dy, cache)
