"""Tian et al. 2021's predictions, tested on the linear model: a grid of weight decay η ×
the predictor's relative learning rate α_p (× EMA τ), the number of modes of W that survive.

Predictions (Tian, Chen & Ganguli 2021, obs. 1, 4 and 5): a larger weight decay enlarges the
collapse basin (fewer surviving modes), a larger relative predictor lr shrinks it (more
surviving modes). Each is read as Spearman's ρ between the knob and the surviving rank over
the whole grid, and for the predictor lr also within each weight decay (where no mode can
die, η small, the predictor's speed has nothing to protect).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np

from siamdyn.theory.linear import LinearSetup, train_linear

WEIGHT_DECAYS = (0.0, 0.01, 0.03, 0.1)
PREDICTOR_LR_RATIOS = (0.1, 0.3, 1.0, 3.0)
TAUS = (0.0, 0.9)


def run_sweep(base: LinearSetup, weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
              ratios: tuple[float, ...] = PREDICTOR_LR_RATIOS, taus: tuple[float, ...] = TAUS,
              seeds: int = 3) -> list[dict[str, Any]]:
    """One row per (η, α_p, τ, seed): the final rank of W and whether it collapsed."""
    rows = []
    for wd, ratio, tau, seed in itertools.product(weight_decays, ratios, taus, range(seeds)):
        setup = dataclasses.replace(base, weight_decay=wd, predictor_lr_ratio=ratio, tau=tau, seed=seed,
                                    record_every=max(base.steps, 1))
        final = train_linear(setup)["final"]
        rows.append({"weight_decay": wd, "predictor_lr_ratio": ratio, "tau": tau, "seed": seed,
                     "rank_W": final["rank_W"], "collapsed": final["collapsed"]})
    return rows


def prediction(rows: list[dict[str, Any]], knob: str, sign: int) -> dict[str, Any]:
    """Spearman's ρ between `knob` and rank(W) over the rows; agrees if its sign is `sign`
    (0 when nothing varies: not tested)."""
    from siamdyn.experiments.verdicts import spearman
    x = np.array([r[knob] for r in rows], dtype=float)
    y = np.array([r["rank_W"] for r in rows], dtype=float)
    rho = spearman(x, y)
    return {"knob": knob, "predicted_sign": sign, "rho": rho,
            "verdict": "agrees" if rho * sign > 0.3 else ("disagrees" if rho * sign < -0.3 else "no clear trend")}


def rank_table(rows: list[dict[str, Any]], tau: float) -> list[str]:
    """Mean surviving rank of W per (η, α_p) at one τ, as markdown."""
    wds = sorted({r["weight_decay"] for r in rows})
    ratios = sorted({r["predictor_lr_ratio"] for r in rows})
    lines = ["| η \\ α_p | " + " | ".join(f"{a:g}" for a in ratios) + " |", "|---" * (len(ratios) + 1) + "|"]
    for wd in wds:
        cells = [np.mean([r["rank_W"] for r in rows if r["weight_decay"] == wd and r["predictor_lr_ratio"] == a
                          and r["tau"] == tau]) for a in ratios]
        lines.append(f"| {wd:g} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return lines
