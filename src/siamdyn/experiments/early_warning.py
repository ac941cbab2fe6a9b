"""Speed against basin on real networks (docs/open_questions.md, Q3): in a cell whose outcome
splits across seeds, do quantities read early in training predict which seeds collapse?

Each predictor is one number per run at one step (`at(run, step)`, None where not read). Its
AUC for the final outcome (collapsed or not) is the Mann–Whitney statistic U / (n₁·n₀), with
Hanley & McNeil's (1982) interval (at FAMILY_LEVEL) and the exact two-sided Mann–Whitney p-value; the
interval is too narrow near AUC 0 or 1 at small n, so "separates" is read from the p-value.
The lead of a predictor is the median collapse step of the collapsed runs minus the first step
from which it separates the outcomes (p < FAMILY_ALPHA at that reading and every later one).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

from scipy import stats as st

from siamdyn.experiments.readings import Run
from siamdyn.experiments.stats import first_from, spearman_interval

ENCODER_GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")


def _probe(run: Run, step: int) -> dict | None:
    return next((p for p in run.probes if p["step"] == step), None)


def speed_ratio(run: Run, step: int) -> float | None:
    """The predictor's relative update speed ‖Δw‖/‖w‖ over the encoder groups' mean (seed §3 (b))."""
    p = _probe(run, step)
    enc = [p[f"speed/{g}"] for g in ENCODER_GROUPS if p.get(f"speed/{g}") is not None] if p else []
    return p["speed/predictor"] / statistics.mean(enc) if enc and p.get("speed/predictor") is not None else None


def g2_over_g1(run: Run, step: int) -> float | None:
    p = _probe(run, step)
    return p.get("g2_over_g1") if p else None


def eig_alignment(run: Run, step: int) -> float | None:
    """DirectPred: mean |cos(u, W_s u)| over F's top eigenvectors u (probes/spectrum.py; linear predictors)."""
    p = _probe(run, step)
    return p.get("pred_eig_alignment") if p else None


def rank_slope(run: Run, step: int) -> float | None:
    """Least-squares slope of log RankMe(z) per 100 steps over the held-out readings up to `step`."""
    pts = [(s, math.log(r["heldout/z_erank"])) for s, r in sorted(run.heldout.items()) if s <= step]
    if len(pts) < 2:
        return None
    xs, ys = zip(*pts)
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 100 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


def centre_norm(run: Run, step: int) -> float | None:
    """p's centre-vector norm on the held-out batch at `step`: the outcome (a) read early, and at step 0 the
    initial condition (the basin's side of the question). A predictor warns only where it holds before this."""
    return run.heldout.get(step, {}).get("heldout/p_center_norm")


SPEED = "predictor speed / encoder speed"  # the seed's §3 (b) argument, named in the Q3 answer
BASELINE = "p's centre-vector norm (the outcome read early; step 0: the initial condition)"
PREDICTORS: dict[str, Callable[[Run, int], float | None]] = {
    SPEED: speed_ratio, "‖g2‖/‖g1‖": g2_over_g1,
    "DirectPred eigenvector alignment of W_p with F": eig_alignment, "slope of log RankMe(z) per 100 steps": rank_slope,
    BASELINE: centre_norm}
# The predictors are read against one outcome and the earliest is named: each is tested at 0.05 over their
# number (Bonferroni), and its intervals are read at the matching level, so the pick is not the luckiest.
FAMILY_ALPHA = 0.05 / len(PREDICTORS)
FAMILY_LEVEL = 1 - FAMILY_ALPHA
FAMILY_TEXT = f"{100 * FAMILY_LEVEL:g} % (95 % over the {len(PREDICTORS)} predictors, Bonferroni)"


@dataclass
class AUC:
    value: float
    low: float
    high: float
    p: float
    n_collapsed: int
    n_healthy: int


def auc(collapsed: list[float], healthy: list[float], level: float = FAMILY_LEVEL) -> AUC | None:
    """P(a collapsed run's value > a healthy run's), ties ½, with Hanley–McNeil's interval at `level` and
    the exact Mann–Whitney p-value. None unless both outcomes have a value."""
    n1, n0 = len(collapsed), len(healthy)
    if not n1 or not n0:
        return None
    u = sum((c > h) + 0.5 * (c == h) for c in collapsed for h in healthy)
    a = u / (n1 * n0)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(max(0.0, a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0))
    p = float(st.mannwhitneyu(collapsed, healthy, alternative="two-sided",
                              method="exact" if n1 + n0 <= 50 else "asymptotic").pvalue)
    zq = st.norm.ppf(0.5 + level / 2)
    return AUC(a, max(0.0, a - zq * se), min(1.0, a + zq * se), p, n1, n0)


def read_steps(runs: list[Run]) -> list[int]:
    """Every step at which some run has a held-out reading or a probe: where a predictor can be read."""
    return sorted({s for r in runs for s in [*r.heldout, *(p["step"] for p in r.probes)]})


def value_at(at: Callable[[Run, int], float | None], run: Run, step: int) -> float | None:
    """The predictor's value, None where it is not read or not finite (a NaN would rank as a number)."""
    v = at(run, step)
    return v if v is not None and math.isfinite(v) else None


def auc_over_time(runs: list[Run], collapsed: list[bool], at: Callable[[Run, int], float | None]) -> dict[int, AUC]:
    """The predictor's AUC at every step where some run of each outcome has a value."""
    out = {}
    for s in read_steps(runs):
        vals = [(value_at(at, r, s), c) for r, c in zip(runs, collapsed)]
        res = auc([v for v, c in vals if v is not None and c], [v for v, c in vals if v is not None and not c])
        if res is not None:
            out[s] = res
    return out


def first_separating(curve: dict[int, AUC], alpha: float = FAMILY_ALPHA) -> int | None:
    """The first step from which the predictor separates the outcomes at *every* later reading.
    "The first step with p < α" would be a multiple test over ~40 readings: a predictor unrelated
    to the outcome passes it at some step in a third of 10/10 splits (a random walk) or more."""
    return first_from(list(curve), lambda s: curve[s].p < alpha)


# Fewest runs for a ρ reading: Bonett & Wright's interval is too narrow near |ρ| = 1 at small n (4 seeds
# give ρ = ±1 by chance one time in 12, and the interval then reads [0.99, 1]).
MIN_RHO_RUNS = 10


def rho_over_time(runs: list[Run], final: list[float], at: Callable[[Run, int], float | None]
                  ) -> dict[int, tuple[float, float, float, int]]:
    """(ρ, low, high, n): Spearman's ρ with its Fisher-z interval at FAMILY_LEVEL, over the n runs read, between the
    predictor at each step and each run's final degree of collapse (`final`, e.g. completeness (a)): the
    continuous outcome, which needs no calibration and no split of the seeds. Steps where fewer than
    MIN_RHO_RUNS runs have a value, or one side is constant, read nan."""
    out = {}
    for s in read_steps(runs):
        pairs = [(v, f) for r, f in zip(runs, final) if (v := value_at(at, r, s)) is not None]
        if not pairs:  # not read at this step (a held-out reading between probes): no step for it
            continue
        # too few runs, or a constant side (no ranks): a step without a reading, kept so that it breaks
        # "from there on" (first_correlated) rather than being skipped as if it held
        rho = (spearman_interval([v for v, _ in pairs], [f for _, f in pairs], FAMILY_LEVEL)
               if len(pairs) >= MIN_RHO_RUNS else (math.nan, math.nan, math.nan))
        out[s] = (*rho, len(pairs))
    return out if any(math.isfinite(v[0]) for v in out.values()) else {}  # never read: no curve


def first_correlated(curve: dict[int, tuple[float, float, float, int]]) -> int | None:
    """The first step from which ρ's interval excludes 0 at every later reading (as first_separating)."""
    return first_from(list(curve), lambda s: curve[s][1] > 0 or curve[s][2] < 0)
