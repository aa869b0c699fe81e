"""Student's t quantiles for the Yuen-Welch intervals of ``serving.stats``, with numpy alone.

The upper tail is the regularized incomplete beta function, P(T > t) = I_x(df/2, 1/2) / 2 with
x = df / (df + t^2), evaluated by its continued fraction (Press et al., *Numerical Recipes*,
3rd ed., 2007, section 6.4), which converges directly where x < (a + 1) / (a + b + 2), that is
for t^2 > 3 df / (df + 2): every t above sqrt(3). Intervals need only quantiles above 0.96
(t > 1.75), so that is the domain. The quantile is found by Newton's method from the normal
quantile, which lies below it: the tail is convex there, so the iterates rise to the root.
Vectorised over the degrees of freedom: the operating-characteristic simulation asks for
thousands at once, each Welch interval having its own.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

_TERMS = 120  # of the continued fraction: enough for df up to 10^5 (relative error < 1e-9)
_NEWTON = 20  # df = 1 at p = 0.9995 (t = 637) needs the most: the iterates about double each step
_TINY = 1e-300  # the modified Lentz method's guard against a zero denominator


def _lgamma(x: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(v) for v in x])


def _nonzero(v: np.ndarray) -> np.ndarray:
    return np.where(np.abs(v) < _TINY, _TINY, v)


def _log_gamma_ratio(df: np.ndarray) -> np.ndarray:
    """log Gamma((df + 1) / 2) - log Gamma(df / 2): shared by the density and the tail's front
    factor, and fixed for a df, so a quantile's Newton steps compute it once."""
    return _lgamma((df + 1) / 2) - _lgamma(df / 2)


def upper_tail(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """P(T > t) for T ~ Student's t with ``df`` degrees of freedom, for t > sqrt(3)."""
    return _upper_tail(t, df, _log_gamma_ratio(df))


def _upper_tail(t: np.ndarray, df: np.ndarray, log_gamma_ratio: np.ndarray) -> np.ndarray:
    x = df / (df + t * t)
    a, b = df / 2.0, 0.5
    c = np.ones_like(x)
    d = 1.0 / _nonzero(1.0 - (a + b) * x / (a + 1.0))
    fraction = d.copy()
    for m in range(1, _TERMS + 1):
        for aa in (m * (b - m) * x / ((a - 1.0 + 2 * m) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 1.0 + 2 * m))):
            d = 1.0 / _nonzero(1.0 + aa * d)
            c = _nonzero(1.0 + aa / c)
            fraction = fraction * d * c
    # 1 / B(a, b) with b = 1/2: Gamma(a + 1/2) / (Gamma(a) Gamma(1/2)).
    front = np.exp(log_gamma_ratio - math.lgamma(b) + a * np.log(x) + b * np.log1p(-x))
    return 0.5 * front * fraction / a


def t_quantile(p: float, df: np.ndarray | float) -> np.ndarray:
    """The ``p`` quantile (0.96 <= p < 1) of Student's t at each of ``df`` (>= 1, real)."""
    if not 0.96 <= p < 1:
        raise ValueError(f"t_quantile needs 0.96 <= p < 1 (a two-sided interval of 92% or more), got {p}")
    nu = np.atleast_1d(np.asarray(df, dtype=float))
    t = np.full_like(nu, NormalDist().inv_cdf(p))
    ratio = _log_gamma_ratio(nu)
    log_density = ratio - 0.5 * np.log(nu * math.pi)
    for _ in range(_NEWTON):
        density = np.exp(log_density - (nu + 1) / 2 * np.log1p(t * t / nu))
        t = t + (_upper_tail(t, nu, ratio) - (1 - p)) / density
    return t
