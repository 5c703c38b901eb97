"""The CPU speed path of batch normalisation, equal to :mod:`convtrain.ops.batchnorm` up to
float rounding (same signatures, same :class:`~convtrain.ops.batchnorm.BatchNormCache`, so
either backward takes either forward's cache). Non-NumPy arrays (CuPy) take the reference.

The reference makes ~7 full passes over ``x`` in the forward pass and ~6 in the backward,
each allocating an array of ``x``'s size. Here the data is seen as ``(N, C, L)`` (``L = H·W``;
1 for ``batchnorm1d``) and:

- per-channel sums are a matrix-vector product over contiguous rows (``x @ ones(L)``, then a
  sum over the batch), per-channel dot products (``Σ c²``, ``Σ dy·x_hat``) batched ``1×L·L×1``
  matmuls: ~3x faster than ``mean(axis=(0, 2, 3))`` / ``einsum``;
- each elementwise pass writes into an array it keeps (``x_hat``, ``y``, ``dx``), in place
  wherever it can (an in-place pass costs about half a pass into another array): the
  forward pass allocates ``x_hat`` and ``y`` only, the backward pass ``dx`` only;
- the variance is still the mean of squared *centred* values (two passes over ``x``: no
  ``E[x²] - E[x]²`` cancellation in float32);
- large arrays (``Routes.batchnorm_min_parallel_bytes``) are split by samples between the
  engine's threads (:func:`~convtrain.runtime.threads.run_split`), each phase in one
  hand-off; every output element and every per-sample partial sum is computed by the same
  operations whatever the split, so results do not depend on the thread count.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np  # only to tell NumPy arrays from CuPy ones (`xp is np`)

from convtrain.ops import batchnorm as reference
from convtrain.ops._checks import require_shape
from convtrain.ops.fast.plan import current_routes
from convtrain.ops.batchnorm import (_1D, _2D, BatchNormCache, _Layout, check_forward_arguments,
                                     updated_running_stats)
from convtrain.runtime.backend import array_module
from convtrain.runtime.threads import run_split

def batchnorm2d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                        momentum: float = 0.1, eps: float = 1e-5,
                        training: bool = True) -> tuple[Any, BatchNormCache, Any, Any]:
    """:func:`convtrain.ops.batchnorm.batchnorm2d_forward`: ``x (N, C, H, W)`` ->
    ``(y, cache, new_running_mean, new_running_var)``."""
    if array_module(x) is not np:
        return reference.batchnorm2d_forward(x, gamma, beta, running_mean, running_var,
                                             momentum, eps, training)
    return _forward(_2D, x, gamma, beta, running_mean, running_var, momentum, eps, training)


def batchnorm1d_forward(x: Any, gamma: Any, beta: Any, running_mean: Any, running_var: Any,
                        momentum: float = 0.1, eps: float = 1e-5,
                        training: bool = True) -> tuple[Any, BatchNormCache, Any, Any]:
    """:func:`convtrain.ops.batchnorm.batchnorm1d_forward`: ``x (N, F)`` -> ``(y, cache,
    new_running_mean, new_running_var)``."""
    if array_module(x) is not np:
        return reference.batchnorm1d_forward(x, gamma, beta, running_mean, running_var,
                                             momentum, eps, training)
    return _forward(_1D, x, gamma, beta, running_mean, running_var, momentum, eps, training)


def batchnorm2d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """:func:`convtrain.ops.batchnorm.batchnorm2d_backward`: ``dy (N, C, H, W)`` ->
    ``(dx, dgamma (C,), dbeta (C,))``."""
    return _backward(dy, cache)


def batchnorm1d_backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    """:func:`convtrain.ops.batchnorm.batchnorm1d_backward`: ``dy (N, F)`` ->
    ``(dx, dgamma (F,), dbeta (F,))``."""
    return _backward(dy, cache)


def _as_rows(a: Any) -> Any:
    """``a`` ``(N, C, ...)`` as a C-contiguous ``(N, C, L)`` view (a copy if it was strided)."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[0], a.shape[1], int(np.prod(a.shape[2:], dtype=np.int64)))


def _by_samples(work: Callable[[int, int], None], a3: Any, operands: int) -> None:
    """Call ``work(start, stop)`` over ranges of samples of ``a3 (N, C, L)``, split between
    the engine's threads from ``Routes.batchnorm_min_parallel_bytes`` (``operands``: arrays
    of ``a3``'s size the work touches)."""
    if a3.nbytes < current_routes().batchnorm_min_parallel_bytes:
        work(0, int(a3.shape[0]))
    else:
        run_split(work, int(a3.shape[0]), operands * a3.nbytes, np)


def _sample_sums(a3: Any) -> Any:
    """``(N, C)``: each sample's sum of ``a3 (N, C, L)`` over ``L`` (one matrix-vector product
    over contiguous rows)."""
    if a3.shape[2] == 1:
        return a3[:, :, 0]
    return a3 @ np.ones(a3.shape[2], dtype=a3.dtype)


def _sample_dots(a3: Any, b3: Any, out: Any) -> None:
    """``out (n, C)``: each sample's and channel's dot product of ``a3`` and ``b3`` over L."""
    if a3.shape[2] == 1:
        np.multiply(a3[:, :, 0], b3[:, :, 0], out=out)
    else:
        np.matmul(a3[:, :, None, :], b3[:, :, :, None], out=out[:, :, None, None])


def _forward(layout: _Layout, x: Any, gamma: Any, beta: Any, running_mean: Any,
             running_var: Any, momentum: float, eps: float,
             training: bool) -> tuple[Any, BatchNormCache, Any, Any]:
    count = check_forward_arguments(layout, x, gamma, beta, running_mean, running_var,
                                    momentum, eps, training)
    x3 = _as_rows(x)
    n, c, _ = x3.shape
    dtype = x.dtype.type
    x_hat = np.empty(x3.shape, dtype=x.dtype)
    y = np.empty(x3.shape, dtype=x.dtype)
    if training:
        mean = _sample_sums(x3).sum(axis=0) / dtype(count)
        mean_column = mean[:, None]
        squares = np.empty((n, c), dtype=x.dtype)

        def centre(a: int, b: int) -> None:  # x_hat holds the centred values for now
            np.subtract(x3[a:b], mean_column, out=x_hat[a:b])
            _sample_dots(x_hat[a:b], x_hat[a:b], squares[a:b])

        _by_samples(centre, x3, 2)
        var = squares.sum(axis=0) / dtype(count)
        inv_std = 1 / np.sqrt(var + dtype(eps))
        new_mean, new_var = updated_running_stats(running_mean, running_var, mean, var, count,
                                                  momentum)
    else:
        mean_column = running_mean.astype(x.dtype, copy=False)[:, None]
        inv_std = 1 / np.sqrt(running_var.astype(x.dtype, copy=False) + dtype(eps))
        new_mean, new_var = running_mean, running_var
    inv_std_column, gamma_column, beta_column = inv_std[:, None], gamma[:, None], beta[:, None]

    def normalise(a: int, b: int) -> None:
        block = x_hat[a:b]
        if not training:
            np.subtract(x3[a:b], mean_column, out=block)
        np.multiply(block, inv_std_column, out=block)
        np.multiply(block, gamma_column, out=y[a:b])
        np.add(y[a:b], beta_column, out=y[a:b])

    _by_samples(normalise, x3, 3)
    cache = BatchNormCache(x_hat.reshape(x.shape), gamma, inv_std, bool(training), layout)
    return y.reshape(x.shape), cache, new_mean, new_var


def _backward(dy: Any, cache: BatchNormCache) -> tuple[Any, Any, Any]:
    if array_module(dy) is not np:
        return reference.batchnorm2d_backward(dy, cache)  # (1d's is the same function)
    x_hat, gamma, inv_std, layout = cache.x_hat, cache.gamma, cache.inv_std, cache.layout
    require_shape(dy, x_hat.shape, f"{layout.op} backward", "dy")
    dy3, x_hat3 = _as_rows(dy), _as_rows(x_hat)
    n, c, _ = dy3.shape
    dx = np.empty(dy3.shape, dtype=dy.dtype)
    dbeta = _sample_sums(dy3).sum(axis=0)
    products = np.empty((n, c), dtype=dy.dtype)
    _by_samples(lambda a, b: _sample_dots(dy3[a:b], x_hat3[a:b], products[a:b]), dy3, 2)
    dgamma = products.sum(axis=0)
    scale = gamma * inv_std
    if not cache.training:
        scale_column = scale[:, None]
        _by_samples(lambda a, b: np.multiply(dy3[a:b], scale_column, out=dx[a:b]), dy3, 2)
        return dx.reshape(dy.shape), dgamma, dbeta
    count = x_hat.size // x_hat.shape[1]
    # dx = gamma/std * (dy - mean(dy) - x_hat * mean(dy * x_hat)), means per channel: one
    # pass into dx, the three others in place.
    mean_dy = (dbeta / dy.dtype.type(count))[:, None]
    minus_mean_dy_xhat = (-dgamma / dy.dtype.type(count))[:, None]
    scale_column = scale[:, None]

    def input_gradient(a: int, b: int) -> None:
        part = dx[a:b]
        np.multiply(x_hat3[a:b], minus_mean_dy_xhat, out=part)
        np.add(part, dy3[a:b], out=part)
        np.subtract(part, mean_dy, out=part)
        np.multiply(part, scale_column, out=part)

    _by_samples(input_gradient, dy3, 3)
    return dx.reshape(dy.shape), dgamma, dbeta
