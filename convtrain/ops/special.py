"""The error function ``erf`` and its complement ``erfc`` on ``xp`` arrays (NumPy or CuPy).

NumPy has no ``erf``; SciPy is not a dependency of convtrain, a vectorised ``math.erf`` is a
Python loop, and the popular Abramowitz-Stegun 7.1.26 formula is only good to 1.5e-7 (too
coarse for float64 finite-difference checks of GELU). So this module evaluates W. J. Cody's
rational Chebyshev approximations (Math. Comp. 23 (1969) 631-637; the coefficients of his
CALERF routine, netlib ``specfun``), which are accurate to float64 rounding, with nothing but
elementwise arithmetic and ``exp`` that every backend has:

* ``|x| <= 0.46875``:  ``erf(x) = x · A(x²) / B(x²)``;
* ``0.46875 < |x| <= 4``:  ``erfc(|x|) = exp(-x²) · C(|x|) / D(|x|)``;
* ``|x| > 4``:  ``erfc(|x|) = exp(-x²) / |x| · (1/√π + R(1/x²) / S(1/x²) / x²)``,

and ``erf = 1 - erfc``, ``erfc(-x) = 2 - erfc(x)``. ``exp(-x²)`` is computed as
``exp(-t²) · exp(-(|x| - t)(|x| + t))`` with ``t`` = ``|x|`` rounded down to a multiple of 1/16,
so the rounding error of ``x²`` (6e-14 at |x| = 26, which ``exp`` would turn into a relative
error of 6e-14, ~250 ulp) does not reach the result.

Every element evaluates every branch (on clamped arguments, so no branch overflows) and the
masks pick one: about 110 elementwise passes (~50 ms per million float32 elements on a 2-core
CPU), no Python loop and no ``where``, no data-dependent branch on a GPU. Outputs keep the
input's shape and float dtype; in float32 the same formulas are accurate to a few float32 ulp.
"""
from __future__ import annotations

from typing import Any

from convtrain.ops._checks import require_float
from convtrain.runtime.backend import array_module

_SMALL = 0.46875  # below: erf by A/B; above: erfc by C/D or R/S
_MIDDLE = 4.0  # below: erfc by C/D; above: the asymptotic form R/S
_ZERO_BEYOND = 28.0  # erfc(x) < 5e-324 (the smallest float64) from x = 27.3 on: exactly 0
_INV_SQRT_PI = 0.56418958354775628695  # 1/√π

# erf(x) = x · A(x²)/B(x²) for |x| <= 0.46875; A highest degree first in Cody's order
_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
      3.20937758913846947e03, 1.85777706184603153e-1)
_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
      2.84423683343917062e03)
# erfc(y) = exp(-y²) · C(y)/D(y) for 0.46875 < y <= 4
_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
      2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
      2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
      1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
      3.43936767414372164e03, 1.23033935480374942e03)
# erfc(y) = exp(-y²)/y · (1/√π - z·R(z)/S(z)), z = 1/y², for y > 4
_R = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
      1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_S = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
      6.05183413124413191e-2, 2.33520497626869185e-3)


def _rational(t: Any, num: tuple[float, ...], den: tuple[float, ...]) -> Any:
    """Cody's nested (Horner) evaluation of ``num(t) / den(t)``: ``num`` has one coefficient
    more than ``den``; its last one goes with the highest power, and ``den``'s leading
    coefficient is 1. In place on two new arrays: each pass of a large array costs a memory
    round trip, and a fresh temporary per step doubles it."""
    steps = len(den) - 1
    xnum = t * num[-1]
    xden = t.copy()
    for i in range(steps):
        xnum += num[i]
        xnum *= t
        xden += den[i]
        xden *= t
    xnum += num[steps]
    xden += den[steps]
    xnum /= xden
    return xnum


def _exp_minus_square(y: Any, xp: Any) -> Any:
    """``exp(-y²)`` for ``y >= 0`` without the rounding error of ``y²`` (see the module doc)."""
    coarse = xp.floor(y * 16) / 16
    return xp.exp(-coarse * coarse) * xp.exp(-(y - coarse) * (y + coarse))


def _erf_and_erfc_of_abs(x: Any) -> tuple[Any, Any, Any, Any]:
    """``(erf_small, erfc_large, is_small, xp)``: ``erf(|x|)`` by the small-argument form
    (valid where ``is_small``) and ``erfc(|x|)`` by the other two forms (valid elsewhere)."""
    xp = array_module(x)
    y = xp.minimum(xp.abs(x), x.dtype.type(_ZERO_BEYOND))
    is_small = y <= _SMALL
    small = xp.minimum(y, x.dtype.type(_SMALL))
    erf_small = small * _rational(small * small, _A, _B)
    is_middle = y <= _MIDDLE
    middle = xp.minimum(y, x.dtype.type(_MIDDLE))
    large = xp.maximum(y, x.dtype.type(_MIDDLE))
    z = 1 / (large * large)
    asymptotic = (_INV_SQRT_PI - z * _rational(z, _R, _S)) / large
    erfc_tail = (_rational(middle, _C, _D) * is_middle + asymptotic * ~is_middle)
    erfc_tail *= _exp_minus_square(xp.maximum(y, x.dtype.type(_SMALL)), xp)
    return erf_small, erfc_tail, is_small, xp


def erf(x: Any) -> Any:
    """``erf(x) = 2/√π ∫_0^x exp(-t²) dt`` elementwise, accurate to float rounding (Cody).

    Args:
        x: a float array of any shape, on any backend.
    """
    require_float(x, "erf", "x")
    erf_small, erfc_tail, is_small, xp = _erf_and_erfc_of_abs(x)
    # |x| > 0.46875: erf(|x|) = 1 - erfc(|x|) >= 0.49, no cancellation; the sign comes back last
    erf_abs = erf_small * is_small + (1 - erfc_tail) * ~is_small
    return erf_abs * xp.sign(x)


def erfc(x: Any) -> Any:
    """``erfc(x) = 1 - erf(x)`` elementwise, with full relative accuracy also where it is tiny
    (``erfc(10) = 2.1e-45``), which ``1 - erf(x)`` would round to 0.

    Args:
        x: a float array of any shape, on any backend.
    """
    require_float(x, "erfc", "x")
    erf_small, erfc_tail, is_small, xp = _erf_and_erfc_of_abs(x)
    is_large = ~is_small
    negative = x < 0
    return ((1 - erf_small * xp.sign(x)) * is_small  # small |x|: 1 - erf(x), either sign
            + erfc_tail * (is_large & ~negative)  # erfc(y) for y > 0.46875
            + (2 - erfc_tail) * (is_large & negative))  # erfc(-y) = 2 - erfc(y)
