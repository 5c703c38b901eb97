"""Batch normalisation over ``(N, H, W)`` per channel, PyTorch's ``BatchNorm2d`` semantics.

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

_OP = "batchnorm2d"
_CHANNEL = (None, slice(None), None, None)  # (C,) -> (1, C, 1, 1) for broadcasting


class BatchNormCache(NamedTuple):
    x_hat: Any  # (N, C, H, W) normalised input
    gamma: Any  # (C,)
    inv_std: Any  # (C,) 1 / sqrt(var + eps) of the statistics that were used
    training: bool  # True: batch statistics (depend on x); False: constants


def _check_hyperparameters(momentum: Any, eps: Any) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, Real) or not 0 <= momentum <= 1:
        raise ConfigError(f"{_OP}: momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, Real) or not eps > 0:
        raise ConfigError(f"{_OP}: eps must be a positive number, got {eps!r}")


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
    require_ndim(x, 4, _OP, "x", "(N, C, H, W)")
    require_float(x, _OP, "x")
    _check_hyperparameters(momentum, eps)
    channels = int(x.shape[1])
    for name, array in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)):
        if array is not None:
            require_shape(array, (channels,), _OP, name)
    require_same_dtype(_OP, "x", x, gamma=gamma, beta=beta)
    xp = array_module(x)
    if training:
        count = int(x.shape[0] * x.shape[2] * x.shape[3])
        if count < 2:
            raise ConfigError(
                f"{_OP}: training needs more than 1 value per channel to estimate a variance, "
                f"got input shape {tuple(x.shape)}"
            )
        mean = x.mean(axis=(0, 2, 3))
        centered = x - mean[_CHANNEL]
        var = (centered * centered).mean(axis=(0, 2, 3))
        inv_std = 1 / xp.sqrt(var + x.dtype.type(eps))
        x_hat = centered * inv_std[_CHANNEL]
        if running_mean is not None and running_var is not None:
            unbiased = var * x.dtype.type(count / (count - 1))
            new_mean = (1 - momentum) * running_mean + momentum * mean.astype(running_mean.dtype)
            new_var = (1 - momentum) * running_var + momentum * unbiased.astype(running_var.dtype)
        else:
            new_mean, new_var = running_mean, running_var
    else:
        if running_mean is None or running_var is None:
            raise ConfigError(f"{_OP}: evaluation mode needs running_mean and running_var")
        mean = running_mean.astype(x.dtype, copy=False)
        inv_std = 1 / xp.sqrt(running_var.astype(x.dtype, copy=False) + x.dtype.type(eps))
        x_hat = (x - mean[_CHANNEL]) * inv_std[_CHANNEL]
        new_mean, new_var = running_mean, running_var
    y = x_hat * gamma[_CHANNEL] + beta[_CHANNEL]
    return y, BatchNormCache(x_hat, gamma, inv_std, bool(training)), new_mean, new_var


def batchnorm2d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """Args: ``dy (N, C, H, W)``.

    Returns:
        ``(dx (N, C, H, W), dgamma (C,), dbeta (C,))``. In training mode ``dx`` includes the
        paths through the batch mean and variance.
    """
    x_hat, gamma, inv_std = cache.x_hat, cache.gamma, cache.inv_std
    require_shape(dy, x_hat.shape, f"{_OP} backward", "dy")
    dbeta = dy.sum(axis=(0, 2, 3))
    dgamma = (dy * x_hat).sum(axis=(0, 2, 3))
    scale = (gamma * inv_std)[_CHANNEL]
    if not cache.training:
        return dy * scale, dgamma, dbeta
    count = x_hat.shape[0] * x_hat.shape[2] * x_hat.shape[3]
    # dx = gamma/std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means per channel.
    mean_dy = (dbeta / count)[_CHANNEL]
    mean_dy_xhat = (dgamma / count)[_CHANNEL]
    dx = scale * (dy - mean_dy - x_hat * mean_dy_xhat)
    return dx, dgamma, dbeta
