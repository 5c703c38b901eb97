"""Softmax cross-entropy on logits, numerically stable for any logit magnitude."""
from __future__ import annotations

from typing import Any

from convtrain.runtime.backend import array_module
from convtrain.ops._checks import require_float, require_ndim
from convtrain.errors import ConfigError

_OP = "softmax_cross_entropy"


def log_softmax(logits: Any) -> Any:
    """Log-probabilities along the last axis, same shape and dtype as ``logits``.

    The row maximum is subtracted first, so ``exp`` never sees a positive argument and cannot
    overflow (logits of 1e4 are fine in float32).
    """
    require_float(logits, "log_softmax", "logits")
    xp = array_module(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def _check_labels(labels: Any, n: int, k: int) -> None:
    require_ndim(labels, 1, _OP, "labels", "(N,)")
    if labels.dtype.kind not in "iu":
        raise ConfigError(f"{_OP}: labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ConfigError(f"{_OP}: {labels.shape[0]} labels for {n} rows of logits")
    bad = (labels < 0) | (labels >= k)
    if bool(bad.any()):  # one device->host sync per batch, the price of a readable error
        value = int(labels[bad][0])
        raise ConfigError(
            f"{_OP}: label {value} is out of range for K={k} classes (labels must be in [0, {k}))"
        )


def softmax_cross_entropy(logits: Any, labels: Any) -> tuple[float, Any]:
    """Mean cross-entropy of softmax(logits) against integer labels.

    Args:
        logits: ``(N, K)`` float.
        labels: ``(N,)`` ints in ``[0, K)``.

    Returns:
        ``(loss, dlogits)``: the mean loss as a Python float and its gradient ``(N, K)``
        (``(softmax - onehot) / N``) in the dtype of ``logits``.
    """
    require_ndim(logits, 2, _OP, "logits", "(N, K)")
    n, k = int(logits.shape[0]), int(logits.shape[1])
    _check_labels(labels, n, k)
    if n == 0:
        raise ConfigError(f"{_OP}: empty batch (logits shape {tuple(logits.shape)})")
    xp = array_module(logits)
    log_probs = log_softmax(logits)
    rows = xp.arange(n)
    loss = -float(log_probs[rows, labels].sum()) / n
    dlogits = xp.exp(log_probs)
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits
