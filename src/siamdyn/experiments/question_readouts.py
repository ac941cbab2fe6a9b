"""The readouts the open questions' tables, answers and figures share (docs/open_questions.md):
a cell's point in the Q1 factorial, P(complete collapse) with its interval, the backbone's kNN
change after the z head collapsed, and a Q3 seed's outcome."""
from __future__ import annotations

import os

from siamdyn.experiments.grids import Cell
from siamdyn.experiments.levels import COMPLETE, completeness, head_state, time_to_collapse
from siamdyn.experiments.readings import Run
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import clopper_pearson
from siamdyn.inputs import read_json

TARGETS = {"view_mean": "f(x̄)", "view_feature_mean": "mean_k f(T_k x)", "online": "another view", "ema": "EMA"}


def key(cell: Cell) -> str:
    """The cell's run group in a Scale ("grid/name")."""
    return f"{cell.grid}/{cell.name}"


def factor_values(run: Run) -> dict[str, str]:
    """The run's point in the Q1 factorial: target, stop-gradient, predictor, loss, output BN."""
    c = run.cfg
    return {"target": TARGETS.get(c.target, c.target),
            "stop-gradient": "on" if c.grad_terms == "predictor_branch" else "off", "predictor": c.predictor,
            "loss": c.loss, "output BN": "no" if c.projector.endswith("no-out-bn") else "yes"}


def factors(run: Run) -> str:
    """The factorial point as table cells."""
    return " | ".join(factor_values(run).values())


def p_complete(runs: list[Run]) -> tuple[int, int, str]:
    """(k complete, n read, "k/n [lo, hi]") with the Clopper–Pearson 95 % interval."""
    values = [v for r in runs if (v := completeness(r)) is not None]
    k, n = sum(v >= COMPLETE for v in values), len(values)
    if not n:
        return 0, 0, "—"
    lo, hi = clopper_pearson(k, n)
    return k, n, f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def knn_after_head_collapse(run: Run, scale: Scale) -> float | None:
    """Backbone kNN change (points) over the z head's collapsed phase: from the last kNN reading at or
    before its collapse (else the first after it: the collapse can come before the first reading) to
    the end of the run; None when z did not collapse or no later reading exists."""
    cal = scale.calibration.get("z")
    t = time_to_collapse(run, "z", cal) if cal else None
    history = [(h["step"], h["knn_acc"]) for h in run.summary.get("knn", []) if h.get("knn_acc") is not None]
    if t is None or len(history) < 2:
        return None
    start = max((i for i, (step, _) in enumerate(history) if step <= t), default=None)
    start = start if start is not None else next(i for i, (step, _) in enumerate(history) if step > t)
    return history[-1][1] - history[start][1] if start < len(history) - 1 else None


def outcomes(runs: list[Run], scale: Scale) -> tuple[list[Run], list[bool], list[int], str]:
    """The runs with an outcome, whether each collapsed (the z head at level (b) where the scale
    calibrates it, else complete collapse (a)), the collapsed runs' collapse steps, and the rule.
    A run without the reading is left out, not counted as healthy."""
    cal = scale.calibration.get("z")
    if cal is not None and cal.separated:
        read = [(r, s == "collapsed") for r in runs if (s := head_state(r, "z", cal)) is not None]
        steps = [t for r, c in read if c and (t := time_to_collapse(r, "z", cal)) is not None]
        rule = "z collapsed (b)"
    else:
        read = [(r, v >= COMPLETE) for r in runs if (v := completeness(r)) is not None]
        steps, rule = [], "complete collapse (a)"
    return [r for r, _ in read], [c for _, c in read], steps, rule


def feature_choice(scale: Scale) -> tuple[dict, dict[str, dict[str, dict]]] | None:
    """Grid Q2's analysis.json and its rows per encoder ("encoder" → "encoder/seed" → input → readings);
    None where the scale has not run it."""
    path = os.path.join(scale.path, "Q2", "analysis.json")
    if not os.path.exists(path):
        return None
    result = read_json(path)
    encoders: dict[str, dict[str, dict]] = {}
    for run_key, row in result["runs"].items():
        encoders.setdefault(run_key.rsplit("/", 1)[0], {})[run_key] = row
    return result, encoders


def paired_differences(rows: dict[str, dict], name: str, metric: str, reference: str = "f(x)") -> list[float]:
    """Per seed, input `name` minus `reference` (Q2's rows of one encoder: "encoder/seed" → input → readings)."""
    return [r[name][metric] - r[reference][metric] for r in rows.values() if name in r and reference in r]
