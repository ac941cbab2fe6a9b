"""Three-valued verdicts — supported / contradicted / inconclusive — with their statistic.

A claim names its level (levels.py) and what it predicts there. The seeds of a cell give one
number each; the verdict reads a 95 % Student-t interval of their mean against the level's
threshold: supported when the whole interval lies on the predicted side, contradicted when
it lies on the other, inconclusive when it straddles (or fewer than two runs finished).
A bimodal cell reads P(collapse) with a Clopper–Pearson interval against ½; a ladder reads
Spearman's ρ over every (rung, seed) with a Fisher-z interval; a plateau reads the Welch
interval of the difference between its end rungs against a ± log 1.25 equivalence margin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as st

from siamdyn.experiments.stats import clopper_pearson, spearman_interval, t_interval

MIN_RUNS = 2  # a verdict needs a spread: at least this many runs per cell (per rung for a ladder)
PLATEAU_MARGIN = math.log(1.25)  # rungs within ×1.25 of each other in RankMe count as one plateau


@dataclass
class Verdict:
    value: str  # supported | contradicted | inconclusive | protocol failed | not run
    statistic: str  # the number it rests on, with its interval

    def __str__(self) -> str:
        return f"**{self.value}** — {self.statistic}"


def _decide(lo: float, hi: float, threshold: float, predicted_below: bool) -> str:
    below, above = hi < threshold, lo >= threshold
    if below or above:
        return "supported" if below == predicted_below else "contradicted"
    return "inconclusive"


def threshold_verdict(values: list[float], threshold: float, predicted_below: bool, what: str) -> Verdict:
    """The t-interval of the mean of `values` against `threshold`."""
    if not values:
        return Verdict("not run", "no finished seed")
    mean, lo, hi = t_interval(values)
    if len(values) < MIN_RUNS:
        return Verdict("inconclusive", f"{what} {mean:.2f} over 1 run (fewer than {MIN_RUNS})")
    d = tie_digits(threshold, lo, hi)
    stat = f"{what} {mean:.{d}f} [t 95 % CI {lo:.{d}f}, {hi:.{d}f}] over {len(values)} runs vs {threshold:.{d}f}"
    return Verdict(_decide(lo, hi, threshold, predicted_below), stat)


def tie_digits(threshold: float, *bounds: float) -> int:
    """Decimals to print so that no bound reads equal to the threshold it was decided against (2 where
    they differ at 2, up to 4): a bound of 0.749 against 0.753 must not print as 0.75 against 0.75."""
    for d in (2, 3, 4):
        if all(f"{b:.{d}f}" != f"{threshold:.{d}f}" for b in bounds if math.isfinite(b)):
            return d
    return 4


def proportion_verdict(collapsed: int, n: int, predicted: str) -> Verdict:
    """P(collapse) = collapsed/n with its Clopper–Pearson interval, against ½."""
    if n == 0:
        return Verdict("not run", "no finished seed")
    lo, hi = clopper_pearson(collapsed, n)
    stat = f"P(collapse) {collapsed}/{n} = {collapsed / n:.2f} [Clopper–Pearson 95 % {lo:.2f}, {hi:.2f}]"
    return Verdict(_decide(lo, hi, 0.5, predicted == "not collapsed"), stat)


def trend_verdict(rungs: dict[float, list[float]], sign: int, what: str) -> Verdict:
    """Spearman's ρ(log10 rung value, reading); `sign` +1: the reading should grow with the rung."""
    rungs = {x: v for x, v in rungs.items() if v}
    if len(rungs) < 2:
        return Verdict("not run", "fewer than two rungs finished")
    xs = [math.log10(x) if x > 0 else -9.0 for x, v in rungs.items() for _ in v]
    rho, lo, hi = spearman_interval(xs, [y for v in rungs.values() for y in v])
    d = tie_digits(0.0, abs(lo), abs(hi))
    stat = f"Spearman ρ({what}) = {rho:+.{d}f} [Fisher-z 95 % CI {lo:+.{d}f}, {hi:+.{d}f}] over {len(xs)} runs"
    if min(map(len, rungs.values())) < MIN_RUNS:
        return Verdict("inconclusive", stat + f" (a rung with fewer than {MIN_RUNS} runs)")
    if math.isnan(lo):
        return Verdict("inconclusive", stat + " (a constant side: no ranks to read)")
    if (sign > 0 and lo > 0) or (sign < 0 and hi < 0):
        return Verdict("supported", stat)
    if (sign > 0 and hi < 0) or (sign < 0 and lo > 0):
        return Verdict("contradicted", stat)
    return Verdict("inconclusive", stat)


def plateau_verdict(first: list[float], last: list[float], what: str) -> Verdict:
    """Equivalence of two rungs' mean log readings: the Welch 95 % interval of the difference
    inside ± PLATEAU_MARGIN → supported; wholly outside → contradicted."""
    if len(first) < MIN_RUNS or len(last) < MIN_RUNS:
        return Verdict("not run" if not first or not last else "inconclusive", "an end rung has fewer than 2 runs")
    a, b = np.asarray(first, float), np.asarray(last, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = float(b.mean() - a.mean()), math.sqrt(va + vb)
    df = (va + vb) ** 2 / max(va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1), 1e-300)
    half = float(st.t.ppf(0.975, df)) * se
    lo, hi = diff - half, diff + half
    d = tie_digits(PLATEAU_MARGIN, abs(lo), abs(hi))
    stat = (f"Δ {what} = {diff:+.{d}f} [Welch 95 % CI {lo:+.{d}f}, {hi:+.{d}f}] against ±{PLATEAU_MARGIN:.{d}f} "
            f"(×1.25), {len(a)} + {len(b)} runs")
    if lo > -PLATEAU_MARGIN and hi < PLATEAU_MARGIN:
        return Verdict("supported", stat)
    if lo >= PLATEAU_MARGIN or hi <= -PLATEAU_MARGIN:
        return Verdict("contradicted", stat)
    return Verdict("inconclusive", stat)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (average ranks for ties); 0 when either side is constant."""
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(st.spearmanr(x, y).statistic)
