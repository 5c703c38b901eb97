"""Gradient-check assertions for the op and layer tests, on the package's central differences
(:mod:`convtrain.nn.gradcheck`, also behind ``convtrain task=gradcheck``).

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

from convtrain.nn.gradcheck import numerical_gradient, projected_sum, relative_error

__all__ = ["assert_gradient_close", "check_gradients", "numerical_gradient", "projected_sum",
           "relative_error"]


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
