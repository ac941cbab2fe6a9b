"""Statistics that fit 3–20 seeds (docs/protocol.md "Verdicts and statistics").

A percentile bootstrap over n = 3 seeds has 10 distinct resamples and under-covers; these are
the small-sample tools the findings use instead: Student-t intervals for means, prediction
intervals for "where would one more control run land", Clopper–Pearson for a proportion,
the exact sign test for paired seeds, a Fisher-z interval for Spearman's ρ, and a logistic
fit of P(collapse) against a log-scaled knob with the knob's critical value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats as st

LEVEL = 0.95


def first_from(steps: list[int], holds: Callable[[int], bool]) -> int | None:
    """The first step from which `holds` is true at that step and every later one ("the first step
    where it holds" would be a multiple test over the readings, which noise passes by chance)."""
    first = None
    for s in sorted(steps):
        first = (s if first is None else first) if holds(s) else None
    return first


def t_interval(values: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(mean, low, high): the Student-t interval of the mean; (x, nan, nan) for one value."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = st.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def prediction_interval(values: list[float], level: float = LEVEL) -> tuple[float, float]:
    """Where one more draw from the same normal population lands: mean ± t·s·√(1 + 1/n)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = st.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) * math.sqrt(1 + 1 / len(x))
    return float(x.mean() - half), float(x.mean() + half)


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact binomial interval of a proportion k/n."""
    a = 1 - level
    lo = 0.0 if k == 0 else float(st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(st.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def sign_test(differences: list[float]) -> tuple[int, int, float]:
    """(positives, non-zero pairs, two-sided exact p) for paired differences (ties dropped)."""
    d = [x for x in differences if x != 0]
    pos = sum(x > 0 for x in d)
    p = float(st.binomtest(pos, len(d), 0.5).pvalue) if d else 1.0
    return pos, len(d), p


def spearman_interval(x: list[float], y: list[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(ρ, low, high): Spearman's ρ with the Fisher-z interval of Bonett & Wright (2000),
    se = √((1 + ρ²/2)/(n − 3)); nan bounds for n ≤ 3, and all nan for a constant side (no ranks to read)."""
    n = len(x)
    if n <= 1 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan, math.nan
    if n <= 3:
        return float(st.spearmanr(x, y).statistic), math.nan, math.nan
    rho = float(st.spearmanr(x, y).statistic)
    rho_c = max(min(rho, 0.9999), -0.9999)
    se = math.sqrt((1 + rho_c ** 2 / 2) / (n - 3))
    zq = st.norm.ppf(0.5 + level / 2)
    return rho, math.tanh(math.atanh(rho_c) - zq * se), math.tanh(math.atanh(rho_c) + zq * se)


@dataclass
class LogisticFit:
    """P(event) = σ(a + b·log10 x); `critical` is the x where P = ½, with its delta-method interval."""
    a: float
    b: float
    critical: float | None
    low: float | None
    high: float | None
    separated: bool  # the outcomes split perfectly by x: no finite maximum-likelihood fit (a, b: Firth's)
    bracket: tuple[float, float] | None = None  # separated: the two rungs the outcomes split between
    firth: bool = False  # a, b from Firth's penalised likelihood (separation, or no maximum-likelihood fit)


def logistic_critical(xs: list[float], events: list[bool], level: float = LEVEL) -> LogisticFit:
    """Logistic fit of `events` against log10 `xs` and the critical x* = 10^(−a/b) with a delta-method
    interval on log10 x*. Maximum likelihood (Newton's method) where it exists; under separation, complete
    or quasi-complete (both outcomes only at the one rung where they meet), it does not, and Firth's
    penalised likelihood (Firth 1993), which stays finite, gives the fit; a complete split also gives the
    two rungs it lies between as `bracket`."""
    u = np.log10(np.asarray(xs, dtype=float))
    y = np.asarray(events, dtype=float)
    below, above = u[y == 1], u[y == 0]
    if len(below) == 0 or len(above) == 0:
        return LogisticFit(math.nan, math.nan, None, None, None, False)
    bracket, firth = None, False
    for lo_side, hi_side in ((below, above), (above, below)):
        firth = firth or bool(lo_side.max() <= hi_side.min())
        if lo_side.max() < hi_side.min():  # separated: every event on one side of every non-event
            bracket = (float(10 ** lo_side.max()), float(10 ** hi_side.min()))
    X = np.stack([np.ones_like(u), u], 1)
    fit = _newton_logistic(X, y, firth)
    if fit is None and not firth:  # no maximum-likelihood fit after all: Firth's
        fit, firth = _newton_logistic(X, y, True), True
    if fit is None:
        return LogisticFit(math.nan, math.nan, None, None, None, bracket is not None, bracket, firth)
    (a, b), cov = fit
    crit = -a / b  # log10 x*; gradient of −a/b in (a, b) is (−1/b, a/b²)
    grad = np.array([-1 / b, a / b ** 2])
    se = math.sqrt(float(grad @ cov @ grad))
    zq = st.norm.ppf(0.5 + level / 2)
    return LogisticFit(float(a), float(b), float(10 ** crit), float(10 ** (crit - zq * se)),
                       float(10 ** (crit + zq * se)), bracket is not None, bracket, firth)


def _newton_logistic(X: np.ndarray, y: np.ndarray, firth: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(β, inverse Fisher information at β), or None where Newton's method does not converge. Firth: the
    score gains h_i(½ − p_i), h the hat matrix's diagonal, the gradient of ½ log det I(β) that keeps β
    finite under separation."""
    beta = np.zeros(X.shape[1])
    try:
        for _ in range(200):
            p = 1 / (1 + np.exp(-X @ beta))
            w = p * (1 - p)
            inv = np.linalg.inv(X.T @ (X * w[:, None]))
            score = X.T @ (y - p)
            if firth:
                score = score + X.T @ (w * np.einsum("ij,jk,ik->i", X, inv, X) * (0.5 - p))
            step = inv @ score
            beta = beta + step
            if np.abs(step).max() < 1e-10:
                p = 1 / (1 + np.exp(-X @ beta))
                return beta, np.linalg.inv(X.T @ (X * (p * (1 - p))[:, None]))
    except np.linalg.LinAlgError:  # a singular information matrix: the fit runs off to infinity
        return None
    return None
