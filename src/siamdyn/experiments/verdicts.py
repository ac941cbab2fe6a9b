"""Three-valued verdicts — supported / contradicted / inconclusive — with their statistic.

Binary claims ("this cell collapses", "this cell stays healthy") read the mean rank ratio of
the cell's seeds over the measurement window (readings.py) with a bootstrap 95 % interval
over seeds: supported when the whole interval lies on the predicted side of the collapse
threshold (< 0.25) or the healthy one (≥ 0.5), contradicted when it lies on the other side,
inconclusive otherwise. Ladder claims ("a slower X protects less") read Spearman's ρ between
the rung's value and the rank ratio over every (rung, seed), with a bootstrap interval that
resamples seeds within rungs: supported when it excludes 0 with the predicted sign,
contradicted when it excludes 0 with the other, inconclusive otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamdyn.experiments.readings import COLLAPSED_RATIO, HEALTHY_RATIO

BOOTSTRAP = 2000
MIN_RUNS = 2  # a verdict needs a spread: at least this many runs per cell (per rung for a ladder)


def bootstrap_mean(values: list[float], seed: int = 0) -> tuple[float, float, float]:
    """(mean, 2.5 %, 97.5 %) of the mean under resampling of the values."""
    x = np.asarray(values, dtype=float)
    draws = np.random.default_rng(seed).choice(x, size=(BOOTSTRAP, len(x))).mean(1)
    return float(x.mean()), float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's ρ (average ranks for ties); 0 when either side is constant."""
    def rank(v: np.ndarray) -> np.ndarray:
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for value in np.unique(v):  # ties share their mean rank
            r[v == value] = r[v == value].mean()
        return r
    rx, ry = rank(x), rank(y)
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_trend(rungs: dict[float, list[float]], seed: int = 0) -> tuple[float, float, float]:
    """(ρ, 2.5 %, 97.5 %): Spearman's ρ of (rung value, reading), seeds resampled within rungs."""
    rng = np.random.default_rng(seed)
    xs = np.concatenate([[x] * len(v) for x, v in rungs.items()])
    rho = spearman(xs, np.concatenate([v for v in rungs.values()]))
    draws = [spearman(xs, np.concatenate([rng.choice(v, size=len(v)) for v in rungs.values()]))
             for _ in range(BOOTSTRAP)]
    return rho, float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))


@dataclass
class Verdict:
    value: str  # supported | contradicted | inconclusive | protocol failed | not run
    statistic: str  # the number it rests on, with its interval

    def __str__(self) -> str:
        return f"**{self.value}** — {self.statistic}"


def binary_verdict(ratios: list[float], predicted: str) -> Verdict:
    """`predicted` is "collapsed" or "healthy"; `ratios` are the cell's window rank ratios."""
    if not ratios:
        return Verdict("not run", "no finished seed")
    mean, lo, hi = bootstrap_mean(ratios)
    stat = f"rank ratio {mean:.2f} [95 % CI {lo:.2f}, {hi:.2f}] over {len(ratios)} run(s)"
    if len(ratios) < MIN_RUNS:  # one run has no spread to judge by: report it, decide nothing
        return Verdict("inconclusive", stat + f" (fewer than {MIN_RUNS} runs)")
    collapsed, healthy = hi < COLLAPSED_RATIO, lo >= HEALTHY_RATIO
    if (predicted == "collapsed" and collapsed) or (predicted == "healthy" and healthy):
        return Verdict("supported", stat)
    if (predicted == "collapsed" and healthy) or (predicted == "healthy" and collapsed):
        return Verdict("contradicted", stat)
    return Verdict("inconclusive", stat)


def trend_verdict(rungs: dict[float, list[float]], sign: int, what: str) -> Verdict:
    """`sign` +1: the reading should grow with the rung value; −1: fall."""
    rungs = {x: v for x, v in rungs.items() if v}
    if len(rungs) < 2:
        return Verdict("not run", "fewer than two rungs finished")
    rho, lo, hi = bootstrap_trend(rungs)
    stat = f"Spearman ρ({what}) = {rho:+.2f} [95 % CI {lo:+.2f}, {hi:+.2f}] over {sum(map(len, rungs.values()))} runs"
    if min(map(len, rungs.values())) < MIN_RUNS:
        return Verdict("inconclusive", stat + f" (a rung with fewer than {MIN_RUNS} runs)")
    if (sign > 0 and lo > 0) or (sign < 0 and hi < 0):
        return Verdict("supported", stat)
    if (sign > 0 and hi < 0) or (sign < 0 and lo > 0):
        return Verdict("contradicted", stat)
    return Verdict("inconclusive", stat)
