"""Softmax over axis 1 (the features of ``(N, F)``, the channels of ``(N, C, H, W)``), like
``torch.nn.Softmax(dim=1)``.

Not the classifier's output: the training loss (:mod:`convtrain.ops.losses`) takes logits and
applies its own, fused, log-softmax. This one is for probabilities inside a model (gating,
attention-style weights over channels).
"""
from __future__ import annotations

from typing import Any

from convtrain.errors import InternalError
from convtrain.ops._checks import require_float, require_shape
from convtrain.runtime.backend import array_module


def softmax_forward(x: Any) -> tuple[Any, Any]:
    """``exp(x) / sum(exp(x))`` along axis 1, for ``x`` of shape ``(N, K, ...)``.

    The maximum along the axis is subtracted first, so ``exp`` never sees a positive argument
    (inputs of 1e4 are fine in float32) and at least one term of each sum is 1.

    Returns:
        ``(y, y)``: the probabilities, same shape and dtype; the cache is ``y`` itself.
    """
    require_float(x, "softmax", "x")
    if x.ndim < 2:
        raise InternalError(f"softmax: x must be at least 2-D (N, K, ...), got shape "
                            f"{tuple(x.shape)}")
    xp = array_module(x)
    y = x - x.max(axis=1, keepdims=True)
    y = xp.exp(y, out=y)
    y /= y.sum(axis=1, keepdims=True)
    return y, y


def softmax_backward(dy: Any, cache: Any) -> Any:
    """``dx = y · (dy - sum(dy · y))``, the sum along axis 1 (the Jacobian ``diag(y) - y yᵀ``
    of each softmax vector applied to ``dy``, without forming it)."""
    y = cache
    require_shape(dy, y.shape, "softmax backward", "dy")
    dx = dy * y
    dx -= y * dx.sum(axis=1, keepdims=True)
    return dx
