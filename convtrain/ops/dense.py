"""Fully connected (affine) layer math: ``y = x @ W.T + b``.

The weight uses PyTorch's ``nn.Linear`` layout ``(out_features, in_features)`` so that
``state_dict`` tensors load into PyTorch without a transpose. Shapes: ``x (N, in)``,
``weight (out, in)``, ``y (N, out)``; backward ``dx = dy @ W``, ``dW = dy.T @ x``,
``db = sum of dy over N``. (:mod:`convtrain.ops.fast.dense` runs small GEMMs on one BLAS
thread.)
"""
from __future__ import annotations

from typing import Any, NamedTuple

from convtrain.ops._checks import require_float, require_ndim, require_same_dtype, require_shape
from convtrain.errors import InternalError

_OP = "dense"


class DenseCache(NamedTuple):
    x: Any  # (N, in_features)
    weight: Any  # (out_features, in_features)
    has_bias: bool


def dense_forward(x: Any, weight: Any, bias: Any = None) -> tuple[Any, DenseCache]:
    """Args: ``x (N, in)``, ``weight (out, in)``, ``bias (out,)`` or None.

    Returns:
        ``(y, cache)`` with ``y`` of shape ``(N, out)``.
    """
    require_ndim(x, 2, _OP, "x", "(N, in_features)")
    require_ndim(weight, 2, _OP, "weight", "(out_features, in_features)")
    require_float(x, _OP, "x")
    require_same_dtype(_OP, "x", x, weight=weight, bias=bias)
    out_features, in_features = (int(s) for s in weight.shape)
    if x.shape[1] != in_features:
        raise InternalError(
            f"{_OP}: input has {x.shape[1]} features but weight {tuple(weight.shape)} "
            f"(out_features, in_features) expects {in_features}"
        )
    if bias is not None:
        require_shape(bias, (out_features,), _OP, "bias")
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y, DenseCache(x, weight, bias is not None)


def dense_backward(dy: Any, cache: DenseCache) -> tuple[Any, Any, Any]:
    """Args: ``dy (N, out)``.

    Returns:
        ``(dx (N, in), dweight (out, in), dbias (out,) or None)``.
    """
    require_shape(dy, (cache.x.shape[0], cache.weight.shape[0]), f"{_OP} backward", "dy")
    require_same_dtype(f"{_OP} backward", "the forward input", cache.x, dy=dy)
    dx = dy @ cache.weight
    dweight = dy.T @ cache.x
    dbias = dy.sum(axis=0) if cache.has_bias else None
    return dx, dweight, dbias
