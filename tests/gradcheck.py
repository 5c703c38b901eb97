"""Central-difference gradient checking shared by the engine and layer tests.

Typical use: pick a random upstream gradient ``dy``, define the scalar ``L = sum(dy * f(x))``
whose gradient w.r.t. ``x`` is exactly what ``backward(dy)`` must return, and compare::

    dy = rng.standard_normal(y.shape)
    loss = lambda: projected_sum(forward(x, w)[0], dy)
    check_gradients(loss, {"x": x, "w": w}, {"x": dx, "w": dw})

``numerical_gradient`` perturbs the given arrays IN PLACE (and restores them), so ``loss`` must
read them through its closure. Use float64 arrays: float32 differences are too noisy.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np


def projected_sum(y, dy) -> float:
    """``sum(dy * y)`` as a Python float: a scalar whose gradient w.r.t. ``y`` is ``dy``."""
    return float(np.sum(np.asarray(dy, dtype=np.float64) * np.asarray(y, dtype=np.float64)))


def numerical_gradient(loss: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences ``(L(x + eps e_i) - L(x - eps e_i)) / (2 eps)`` for every element.

    Args:
        loss: no-argument callable returning a scalar; it must read ``x`` (by closure).
        x: a writable float64 NumPy array, perturbed in place one element at a time and
            restored exactly afterwards.
        eps: the step.

    Returns:
        An array shaped like ``x`` (float64).
    """
    if x.dtype != np.float64:
        raise TypeError(f"gradient checks need float64 arrays, got {x.dtype}")
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x = x.reshape(-1)  # a view: writes reach the array the closure reads
    if not np.shares_memory(flat_x, x):
        raise TypeError("numerical_gradient needs a contiguous array it can perturb in place")
    flat_grad = grad.reshape(-1)
    for i in range(flat_x.size):
        original = flat_x[i]
        flat_x[i] = original + eps
        plus = float(loss())
        flat_x[i] = original - eps
        minus = float(loss())
        flat_x[i] = original
        flat_grad[i] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic, numeric) -> float:
    """Norm-wise relative error ``max|a - n| / max(max|a|, max|n|)`` (0 when both are 0).

    Norm-wise rather than element-wise, so entries that are legitimately ~0 do not produce
    huge ratios from rounding noise.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise AssertionError(f"shape mismatch: analytic {a.shape} vs numeric {n.shape}")
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
    if scale == 0.0:
        return 0.0
    return float(np.max(np.abs(a - n))) / scale


def assert_gradient_close(analytic, numeric, tol: float = 1e-6, name: str = "gradient") -> None:
    """Fail with the error, the tolerance and the worst element when they disagree."""
    err = relative_error(analytic, numeric)
    if not err <= tol:
        a = np.asarray(analytic, dtype=np.float64)
        n = np.asarray(numeric, dtype=np.float64)
        worst = np.unravel_index(int(np.argmax(np.abs(a - n))), a.shape)
        raise AssertionError(
            f"{name}: relative error {err:.3e} > {tol:.1e}; worst at index {worst}: "
            f"analytic {a[worst]!r} vs numeric {n[worst]!r}"
        )


def check_gradients(loss: Callable[[], float], inputs: Mapping[str, np.ndarray],
                    analytic: Mapping[str, np.ndarray], eps: float = 1e-6,
                    tol: float = 1e-6) -> None:
    """Compare ``analytic[name]`` with the numerical gradient of ``loss`` w.r.t. ``inputs[name]``
    for every name in ``analytic``.

    Args:
        loss: no-argument callable returning a scalar, reading ``inputs`` by closure.
        inputs: the float64 arrays to differentiate with respect to (perturbed in place).
        analytic: gradients from the code under test, same keys (a subset of ``inputs``).
    """
    missing = set(analytic) - set(inputs)
    if missing:
        raise KeyError(f"no input array for analytic gradients {sorted(missing)}")
    for name, grad in analytic.items():
        numeric = numerical_gradient(loss, inputs[name], eps)
        assert_gradient_close(grad, numeric, tol, name)
