"""The answer paragraphs of "The seed's open questions" in findings.md (docs/open_questions.md):
each question answered in a few sentences computed from the same readouts as its table, naming the
level (head or backbone), the crop strengths and the scale it holds at. A cell's outcome is the
reading most of its seeds reached; the sentences restate measured counts and intervals only."""
from __future__ import annotations

import statistics

from siamdyn.experiments.feature_choice import BLUR, REFERENCE_K
from siamdyn.experiments.early_warning import PREDICTORS, auc_over_time, first_separating
from siamdyn.experiments.grids import CROPS, FACTORIAL, SPEED_BASIN, Cell
from siamdyn.experiments.levels import head_state, representation, z_shrank
from siamdyn.experiments.readings import Run
from siamdyn.experiments.report_format import mean_interval
from siamdyn.experiments.question_readouts import (factor_values, feature_choice, key, knn_after_head_collapse,
                                                   outcomes, p_complete, paired_differences)
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import t_interval

CENTRES = {"eq10": "Q1/eq10", "SimSiam": "controls/simsiam"}


def outcome(runs: list[Run], scale: Scale) -> str:
    """The reading most seeds reached, with its level: complete collapse (a), z shrunk toward 0, the z
    head collapsed / partial / healthy at level (b); "split" with the counts when no reading has a majority."""
    k, n_read, text = p_complete(runs)
    if n_read and 2 * k > n_read:
        return f"complete collapse (a), {text}"
    shrunk = sum(z_shrank(r) for r in runs)
    if 2 * shrunk > len(runs):
        return f"z shrank toward 0 in {shrunk}/{len(runs)} (complete collapse (a) {text})"
    cal = scale.calibration.get("z")
    states = [s for r in runs if not z_shrank(r) and (s := head_state(r, "z", cal)) is not None] if cal else []
    for state in ("collapsed", "partial", "healthy"):
        if 2 * states.count(state) > len(runs):
            return f"z {state} (b) in {states.count(state)}/{len(runs)}, complete collapse (a) {text}"
    counts = "/".join(str(states.count(s)) for s in ("collapsed", "partial", "healthy"))
    return f"split: z collapsed/partial/healthy {counts} (b), complete collapse (a) {text}"


def kind(text: str) -> str:
    """The outcome without its counts, to compare two cells' outcomes."""
    return text.split(" in ")[0].split(",")[0].split(":")[0]


def backbone(runs: list[Run], base: dict) -> str:
    vals = [x for r in runs if (x := representation(r, base)["knn_over_random"]) is not None]
    return interval(vals, "kNN − random init") if vals else "kNN not read"


def interval(values: list[float], what: str) -> str:
    """"what +m [lo, hi]" (Student-t 95 % over seeds), or the single value."""
    return f"{what} {mean_interval(values)}"


def sign(values: list[float]) -> str:
    """Which way a paired difference goes: below or above 0 with its 95 % interval, else neither."""
    if len(values) < 2:
        return "unread (one seed)"
    _, lo, hi = t_interval(values)
    return "below 0" if hi < 0 else "above 0" if lo > 0 else "not separated from 0"


def changed(cell_runs: list[Run], centre_runs: list[Run]) -> list[str]:
    """"factor = value" for each factor in which a cell differs from a centre."""
    a, b = factor_values(cell_runs[0]), factor_values(centre_runs[0])
    return [f"{name} {a[name]}" for name in a if a[name] != b[name]]


def around(centre: str, scale: Scale, base: dict) -> list[str]:
    """One bullet for a centre: its outcome, the single factors that change it (with what they lead
    to) and those that leave it."""
    ref = scale.groups.get(CENTRES[centre], [])
    if not ref:
        return []
    ref_outcome = outcome(ref, scale)
    moved, kept = [], []
    for cell in FACTORIAL:
        runs = scale.groups.get(key(cell), [])
        if not runs or key(cell) == CENTRES[centre] or len(diff := changed(runs, ref)) != 1:
            continue
        o = outcome(runs, scale)
        if kind(o) != kind(ref_outcome):
            moved.append(f"{diff[0]} (`{cell.name}`) → {o}; {backbone(runs, base)}")
        else:
            kept.append(f"{diff[0]} (n = {len(runs)})")
    change = "changes the outcome with: " + "; ".join(moved) if moved else "never changes the outcome"
    return [f"- **Around {centre}** (`{CENTRES[centre]}`: {ref_outcome}; {backbone(ref, base)}). "
            f"Changing one factor {change}." + (f" Leaves it: {', '.join(kept)}." if kept else "")]


def after_head_collapse(scale: Scale) -> str:
    """Whether the backbone's kNN falls after the z head collapsed, over every Q1 run that has it."""
    runs = [r for c in FACTORIAL for r in scale.groups.get(key(c), [])]
    values = [d for r in runs if (d := knn_after_head_collapse(r, scale)) is not None]
    if not values:
        return ("- **The backbone after the head:** no Q1 run whose z head collapsed had two kNN readings from "
                "its collapse on, so whether the backbone degrades after it is unread.")
    way = {"below 0": "falls", "above 0": "rises", "unread (one seed)": "changes"}.get(sign(values),
                                                                                      "does not move measurably")
    return (f"- **The backbone after the head:** once the z head collapsed, its kNN {way} "
            f"({interval(values, 'change')} points from the kNN reading at or next after the collapse to the end, over "
            f"{len(values)} run(s)).")


def crop_sentence(scale: Scale) -> str:
    """Per eq.-(10) cell: the outcome at each crop strength (crops from 20 % is its Q1 cell)."""
    parts = []
    for base_cell in (FACTORIAL[0], FACTORIAL[5], FACTORIAL[1]):
        arms = [("crops from 20 %", base_cell)] + [(f"{arm}", Cell("Q1-aug", f"{base_cell.name}-{arm}", ""))
                                                  for arm in CROPS]
        read = [(label, kind(outcome(runs, scale)), len(runs)) for label, c in arms
                if (runs := scale.groups.get(key(c), []))]
        if len(read) > 1:
            parts.append(f"`{base_cell.name}`: " + ", ".join(f"{label} {o} (n = {n})" for label, o, n in read))
    if not parts:
        return "- **Crop strength:** only the default crops (from 20 % of the image) were run."
    return ("- **Crop strength** (crop0.9 / crop0.6: crops from 90 % / 60 % of the image; no-crop: flip and jitter "
            "only): " + "; ".join(parts) + ".")


def q1_answer(scale: Scale, base: dict) -> list[str]:
    if not scale.groups.get(CENTRES["eq10"]):
        return []
    two = [c for c in FACTORIAL if scale.groups.get(key(c))
           and all(len(changed(scale.groups[key(c)], scale.groups[ref])) > 1 for ref in CENTRES.values()
                   if scale.groups.get(ref))]
    pairs = "; ".join(f"`{c.name}` ({', '.join(changed(scale.groups[key(c)], scale.groups[CENTRES['eq10']]))}): "
                      f"{outcome(scale.groups[key(c)], scale)}" for c in two)
    text = around("eq10", scale, base) + around("SimSiam", scale, base)
    text += [f"- **Two factors changed from eq. (10):** {pairs}." if pairs else "", after_head_collapse(scale),
             crop_sentence(scale)]
    return [f"**Answer at {scale.label}** (this scale only; the table's last line says what the design cannot "
            "see):", "", *[t for t in text if t], ""]


def q3_answer(scale: Scale) -> list[str]:
    """The best early predictor (the earliest to separate the outcomes for good, then the largest
    |AUC − ½|) and how the seed's speed argument fares."""
    runs = scale.groups.get(key(SPEED_BASIN[0]), [])
    runs, collapsed, steps, rule = outcomes(runs, scale) if len(runs) > 1 else ([], [], [], "")
    if not runs or all(collapsed) or not any(collapsed):
        return [f"**Answer at {scale.label}.** The outcomes did not split ({sum(collapsed)} of {len(runs)} seeds "
                "collapsed), so no early predictor can be read.", ""] if runs else []
    found = []
    for name, at in PREDICTORS.items():
        curve = auc_over_time(runs, collapsed, at)
        if curve and (first := first_separating(curve)) is not None:
            found.append((first, -abs(curve[first].value - 0.5), name, curve[first]))
    head = f"**Answer at {scale.label}.** {sum(collapsed)} of {len(runs)} seeds collapsed ({rule}). "
    if not found:
        return [head + "No early predictor separates the outcomes (exact Mann–Whitney p < 0.05 from some step on); "
                "neither speed nor any other early reading tells the seeds apart at this sample size.", ""]
    first, _, name, a = min(found)
    lead = f", {statistics.median(steps) - first:g} steps before the median collapse" if steps else ""
    speed = next((f for f in found if f[2] == "predictor speed / encoder speed"), None)
    return [head + f"The best early predictor is {name}: AUC {a.value:.2f} [{a.low:.2f}, {a.high:.2f}] from step "
            f"{first}{lead}. The seed's speed argument (§3 (b)): the predictor's relative speed "
            + (f"separates the outcomes from step {speed[0]} (AUC {speed[3].value:.2f})." if speed
               else "does not separate the outcomes (at no step does p < 0.05 hold from there to the end)."), ""]


def q2_answer(scale: Scale) -> list[str]:
    """Per encoder: f(x̄_8) against f(x), against the blur control, and the feature mean against f(x),
    each paired by seed on kNN."""
    if (read := feature_choice(scale)) is None:
        return []
    xbar, mean_f = f"f(x̄_{REFERENCE_K})", f"mean_k f(T_k x), K = {REFERENCE_K}"
    parts = []
    for encoder, rows in read[1].items():
        d_xbar = paired_differences(rows, xbar, "knn")
        beyond = paired_differences(rows, xbar, "knn", reference=BLUR)
        parts.append(f"{encoder}: {interval(d_xbar, f'{xbar} − f(x)')} ({sign(d_xbar)}); "
                     f"{interval(beyond, f'{xbar} − the blur control')} ({sign(beyond)}); "
                     f"{interval(paired_differences(rows, mean_f, 'knn'), 'the feature mean − f(x)')}")
    return [f"**Answer at {scale.label}** (kNN points, paired by seed, t 95 %). " + "; ".join(parts) + ". Below 0 "
            "means f(x) is the better feature; the blur control says how much of the gap is blur alone.", ""]
