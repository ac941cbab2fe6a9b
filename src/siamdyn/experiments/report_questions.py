"""The seed's open questions in findings.md (docs/open_questions.md): Q1, "does eq. (10)
collapse?", read from grid Q1 (one factor at a time around eq. (10) as written and around
SimSiam) and grid Q1-aug (augmentation strength), at the three readouts of the findings
protocol plus the projector's hidden layer, and the backbone's kNN over time; Q3, speed against
basin, from grid Q3 (early predictors of which seeds collapse, early_warning.py)."""
from __future__ import annotations

import json
import os
import statistics

from siamdyn.inputs import open_input
from siamdyn.experiments.early_warning import PREDICTORS, auc_over_time, first_separating
from siamdyn.experiments.grids import AUGMENTATION, CROPS, FACTORIAL, SPEED_BASIN, Cell
from siamdyn.experiments.levels import (COMPLETE, completeness, head_state, representation, time_to_collapse,
                                        z_shrank)
from siamdyn.experiments.readings import Run, window_mean
from siamdyn.experiments.report_format import mean_std as _ms
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import clopper_pearson, t_interval

TARGETS = {"view_mean": "f(x̄)", "view_feature_mean": "mean_k f(T_k x)", "online": "another view", "ema": "EMA"}
# What one-factor-at-a-time around two centres cannot see (the report says so).
UNSEEN = ("three-way interactions; loss × target away from the two centres; the predictor with the "
          "feature-mean target; any factor at a scale or optimiser other than the one run")


def factors(run: Run) -> str:
    """The cell's point in the factorial: target, stop-gradient, predictor, loss, output BN, crops."""
    c = run.cfg
    return (f"{TARGETS.get(c.target, c.target)} | {'on' if c.grad_terms == 'predictor_branch' else 'off'} | "
            f"{c.predictor} | {c.loss} | {'no' if c.projector.endswith('no-out-bn') else 'yes'}")


def p_complete(runs: list[Run]) -> tuple[int, int, str]:
    """(k complete, n read, "k/n [lo, hi]") with the Clopper–Pearson 95 % interval."""
    values = [v for r in runs if (v := completeness(r)) is not None]
    k, n = sum(v >= COMPLETE for v in values), len(values)
    if not n:
        return 0, 0, "—"
    lo, hi = clopper_pearson(k, n)
    return k, n, f"{k}/{n} [{lo:.2f}, {hi:.2f}]"


def knn_after_head_collapse(run: Run, scale: Scale) -> float | None:
    """Backbone kNN change (points) from the last reading at or before the z head's collapse to the
    end of the run; None when z did not collapse or no kNN was read before it."""
    cal = scale.calibration.get("z")
    t = time_to_collapse(run, "z", cal) if cal else None
    history = [(h["step"], h["knn_acc"]) for h in run.summary.get("knn", []) if h.get("knn_acc") is not None]
    before = [acc for step, acc in history if t is not None and step <= t]
    return None if not before or len(history) < 2 else history[-1][1] - before[-1]


def question_row(name: str, runs: list[Run], scale: Scale, base: dict) -> str:
    cal = scale.calibration.get("z")
    read = [r for r in runs if not z_shrank(r)]
    shrunk = len(runs) - len(read)
    states = [head_state(r, "z", cal) for r in read] if cal else []
    z = "/".join(str(states.count(s)) for s in ("collapsed", "partial", "healthy")) if states else "—"
    z += f"; {shrunk} shrank (rank not read)" if shrunk else ""
    ranks = " / ".join(_ms([window_mean(r, f"heldout/{d}_erank") for r in runs], "{:.1f}")
                       for d in ("feature", "proj_hidden", "z"))
    rep = [representation(r, base) for r in runs]
    return (f"| {name} | {factors(runs[0])} | {len(runs)} | {p_complete(runs)[2]} | {z} | "
            f"{_ms([window_mean(r, 'heldout/p_abs_cos') for r in runs])} | "
            f"{_ms([window_mean(r, 'heldout/z_mean_norm') for r in runs])} | {ranks} | "
            f"{_ms([x['knn_over_random'] for x in rep], '{:+.1f}')} | "
            f"{_ms([x['linear_over_random'] for x in rep], '{:+.1f}')} | "
            f"{_ms([knn_after_head_collapse(r, scale) for r in runs], '{:+.1f}')} |")


def _key(cell: Cell) -> str:
    return f"{cell.grid}/{cell.name}"


def factorial_lines(scale: Scale, base: dict) -> list[str]:
    lines = ["| cell | target | stop-grad | predictor | loss | output BN | seeds | (a) P(complete) [95 %] | "
             "(b) z: collapsed/partial/healthy | mean \\|cos\\| of p | mean ‖z‖ | RankMe backbone / projector "
             "hidden / z | (c) kNN − random | (c) linear − random | kNN change after z collapsed |", "|---" * 15 + "|"]
    if not any(scale.groups.get(_key(c)) for c in FACTORIAL if c.grid == "Q1"):
        return []  # only the cells other grids share (H6's xbar-K4, H2's no-predictor): not Q1 run here
    rows = [question_row(c.name, scale.groups[_key(c)], scale, base) for c in FACTORIAL if scale.groups.get(_key(c))]
    return lines + rows + ["", f"Not visible in this design: {UNSEEN}.", ""] if rows else []


def aug_read(runs: list[Run], scale: Scale) -> str:
    """"k/n [lo, hi]; z collapsed m/n": complete collapse (a) and the z head at level (b)."""
    cal = scale.calibration.get("z")
    if not runs:
        return "—"
    z = sum(head_state(r, "z", cal) == "collapsed" for r in runs) if cal else None
    return p_complete(runs)[2] + (f"; z collapsed {z}/{len(runs)}" if z is not None else "")


def augmentation_lines(scale: Scale) -> list[str]:
    """Per base cell and crop arm (the default arm, crops from 20 %, is Q1's cell): complete collapse
    (a) with its Clopper–Pearson interval, and the z head collapsed (b)."""
    bases = {FACTORIAL[0].name: FACTORIAL[0], "xbar-K4": FACTORIAL[5], FACTORIAL[1].name: FACTORIAL[1],
             "simsiam": Cell("controls", "simsiam", "simsiam")}
    arms = ["crops from 20 %"] + list(CROPS)
    rows = []
    for name, base_cell in bases.items():
        cells = [base_cell] + [c for c in AUGMENTATION if c.name.startswith(f"{name}-") and
                               c.name[len(name) + 1:] in CROPS]
        reads = [aug_read(scale.groups.get(_key(c), []), scale) for c in cells]
        if any(r != "—" for r in reads[1:]):
            rows.append(f"| {name} | " + " | ".join(reads) + " |")
    head = ["| cell | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    return head + rows + [""] if rows else []


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


def speed_basin_lines(scale: Scale) -> list[str]:
    """Q3: per early predictor, its AUC at the earliest step it separates the outcomes, and the lead."""
    runs = scale.groups.get(_key(SPEED_BASIN[0]), [])
    if len(runs) < 2:
        return []
    runs, collapsed, steps, rule = outcomes(runs, scale)
    lines = [f"### Q3 at {scale.label}: speed or basin?", "", f"`{SPEED_BASIN[0].name}`: {sum(collapsed)} of "
             f"{len(runs)} seeds collapsed "
             f"({rule}); median collapse step {statistics.median(steps) if steps else '—'}.", "",
             "| early predictor | first step from which it separates (exact Mann–Whitney p < 0.05 there and later) | "
             "AUC there [Hanley–McNeil 95 %] | lead before the median collapse (steps) | "
             "AUC at the first reading |", "|---|---|---|---|---|"]
    for name, at in PREDICTORS.items():
        curve = auc_over_time(runs, collapsed, at)
        if not curve:
            continue
        first = first_separating(curve)
        s0 = min(curve)
        where = (f"{first} | {curve[first].value:.2f} [{curve[first].low:.2f}, {curve[first].high:.2f}], "
                 f"p = {curve[first].p:.3g} | {statistics.median(steps) - first if steps else '—'}"
                 if first is not None else "never | — | —")
        lines.append(f"| {name} | {where} | step {s0}: {curve[s0].value:.2f} (p = {curve[s0].p:.2g}) |")
    return lines + [""]


def paired(rows: dict[str, dict], name: str, metric: str) -> str:
    """Mean paired difference (condition − f(x)) over seeds with its Student-t 95 % interval."""
    diffs = [r[name][metric] - r["f(x)"][metric] for r in rows.values() if name in r and "f(x)" in r]
    if len(diffs) < 2:
        return f"{diffs[0]:+.1f}" if diffs else "—"
    mean, lo, hi = t_interval(diffs)
    return f"{mean:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def feature_choice_lines(scale: Scale) -> list[str]:
    """Q2: every test-time input against f(x), seed by seed, per encoder (kNN / linear probe points)."""
    path = os.path.join(scale.path, "Q2", "analysis.json")
    if not os.path.exists(path):
        return []
    with open_input(path) as f:
        result = json.load(f)
    encoders: dict[str, dict[str, dict]] = {}
    for key, row in result["runs"].items():
        encoders.setdefault(key.rsplit("/", 1)[0], {})[key] = row
    names = list(next(iter(result["runs"].values())))  # the conditions, in feature_choice's order
    sigmas = sorted(result.get("blur sigma", {}).values())
    lines = [f"### Q2 at {scale.label}: f(x) or f(x̄)?", "", "Each test-time input minus f(x), paired by seed "
             f"(kNN / linear probe, points, mean [t 95 %]); the eq. (10) cell is "
             f"`{result['best eq10 cell (by final kNN)']}`, the best of its family by final kNN on these test images "
             "(which favours its f(x) a little); the blur's σ "
             + (f"{sigmas[0]:.2f}–{sigmas[-1]:.2f} px." if sigmas else "—."), "",
             "| input | " + " | ".join(encoders) + " |", "|---" * (len(encoders) + 1) + "|",
             "| f(x), absolute | " + " | ".join(
                 f"{_ms([r['f(x)']['knn'] for r in rows.values()], '{:.1f}')} / "
                 f"{_ms([r['f(x)']['linear'] for r in rows.values()], '{:.1f}')}" for rows in encoders.values()) + " |"]
    for name in names:
        if name != "f(x)":
            lines.append(f"| {name} | " + " | ".join(f"{paired(rows, name, 'knn')} / {paired(rows, name, 'linear')}"
                                                     for rows in encoders.values()) + " |")
    return lines + [""]


def questions_section(scales: list[Scale], baselines: list[dict]) -> list[str]:
    """The section for every scale that ran grid Q1 or Q1-aug; [] when none did."""
    lines: list[str] = []
    for scale, base in zip(scales, baselines):
        body = factorial_lines(scale, base)
        aug = augmentation_lines(scale)
        if body or aug:
            lines += [f"### Q1 at {scale.label}: does eq. (10) collapse?", "", *body]
            lines += ["Augmentation strength: (a) P(complete collapse) [95 %]; (b) z collapsed, per crop arm:", "",
                      *aug] if aug else []
        lines += feature_choice_lines(scale) + speed_basin_lines(scale)
    if not lines:
        return []
    return ["## The seed's open questions", "",
            "docs/open_questions.md states the questions, the design and what each column reads; complete "
            f"collapse (a) at completeness ≥ {COMPLETE} (the loss toward its minimum: 1 − final/first for the "
            "squared L2), with Clopper–Pearson intervals over seeds.", "", *lines]
