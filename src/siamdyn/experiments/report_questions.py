"""The seed's open questions in findings.md (docs/open_questions.md): Q1, "does eq. (10)
collapse?", read from grid Q1 (one factor at a time around eq. (10) as written and around
SimSiam) and grid Q1-aug (augmentation strength), at the three readouts of the findings
protocol plus the projector's hidden layer, and the backbone's kNN over time; Q3, speed against
basin, from grid Q3 (early predictors of which seeds collapse, early_warning.py)."""
from __future__ import annotations

import math
import os
import statistics

from siamdyn.experiments.early_warning import (FAMILY_ALPHA, FAMILY_TEXT, PREDICTORS, auc_over_time,
                                               first_correlated, first_separating, rho_over_time)
from siamdyn.experiments.grids import CONTROLS, FACTORIAL, SPEED_BASIN
from siamdyn.experiments.levels import COMPLETE, completeness, representation
from siamdyn.experiments.question_readouts import (AUG_BASES, crop_arms, factors, feature_choice, key,
                                                   knn_after_head_collapse, outcomes, p_complete, paired_differences,
                                                   steps_missing, z_reading)
from siamdyn.experiments.report_across import across_lines
from siamdyn.experiments.report_answers import q1_answer, q2_answer, q3_answer, rho_answer
from siamdyn.experiments.report_figures import plot_depths, plot_early_warning, plot_feature_choice
from siamdyn.experiments.readings import Run, window_mean
from siamdyn.experiments.report_format import mean_interval, mean_std as _ms
from siamdyn.experiments.scales import Scale, has_controls
from siamdyn.experiments.stats import t_interval

# What one-factor-at-a-time around two centres cannot see (the report says so).
UNSEEN = ("three-way interactions; loss × target away from the two centres; the predictor with the "
          "feature-mean target; any factor at a scale or optimiser other than the one run")


def question_row(name: str, runs: list[Run], scale: Scale, base: dict) -> str:
    z = z_reading(runs, scale)
    ranks = " / ".join(_ms([window_mean(r, f"heldout/{d}_erank") for r in runs], "{:.1f}")
                       for d in ("feature", "proj_hidden", "z"))
    rep = [representation(r, base) for r in runs]
    return (f"| {name} | {factors(runs[0])} | {len(runs)} | {p_complete(runs)[2]} | {z} | "
            f"{_ms([window_mean(r, 'heldout/p_abs_cos') for r in runs])} | "
            f"{_ms([window_mean(r, 'heldout/z_mean_norm') for r in runs])} | {ranks} | "
            f"{_ms([x['knn_over_random'] for x in rep], '{:+.1f}')} | "
            f"{_ms([x['linear_over_random'] for x in rep], '{:+.1f}')} | "
            f"{_ms([knn_after_head_collapse(r, scale) for r in runs], '{:+.1f}')} |")


def factorial_lines(scale: Scale, base: dict) -> list[str]:
    lines = ["| cell | target | stop-grad | predictor | loss | output BN | seeds | (a) P(complete) [95 %] | "
             "(b) z: collapsed/partial/healthy | mean \\|cos\\| of p | mean ‖z‖ | RankMe backbone / projector "
             "hidden / z | (c) kNN − random | (c) linear − random | kNN change from the collapse on ((a) or z (b)) |",
             "|---" * 15 + "|"]
    if not any(scale.groups.get(key(c)) for c in FACTORIAL if c.grid == "Q1"):
        return []  # only the cells other grids share (H6's xbar-K4, H2's no-predictor): not Q1 run here
    rows = [question_row(c.name, scale.groups[key(c)], scale, base) for c in FACTORIAL if scale.groups.get(key(c))]
    return lines + rows + ["", f"Not visible in this design: {UNSEEN}.", ""] if rows else []


def aug_read(runs: list[Run], scale: Scale) -> str:
    """"k/n [lo, hi]; z collapsed m/r": complete collapse (a) and the z head at level (b) where calibrated,
    over the r runs whose z is read (z_reading: a z shrunk to noise is not)."""
    if not runs:
        return "—"
    z = z_reading(runs, scale)
    return p_complete(runs)[2] + (f"; z collapsed {z.states['collapsed']}/{z.read}" if z.states else "")


def augmentation_lines(scale: Scale) -> list[str]:
    """Per base cell and crop arm (the default arm, crops from 20 %, is Q1's cell): complete collapse
    (a) with its Clopper–Pearson interval, and the z head collapsed (b)."""
    rows = []
    for name, base in AUG_BASES.items():
        reads = [aug_read(scale.groups.get(key(c), []), scale) for _, c in crop_arms(base)]
        if any(r != "—" for r in reads[1:]):
            rows.append(f"| {name} | " + " | ".join(reads) + " |")
    arms = [label for label, _ in crop_arms(FACTORIAL[0])]
    head = ["| cell | " + " | ".join(arms) + " |", "|---" * (len(arms) + 1) + "|"]
    return head + rows + [""] if rows else []


def auc_table(curves: dict[str, dict], firsts: dict[str, int | None], steps: list[int]) -> list[str]:
    """Per early predictor: the first step from which it separates the outcomes, its AUC there, the lead."""
    lines = [f"| early predictor | first step from which it separates (exact Mann–Whitney p < {FAMILY_ALPHA:g} there "
             f"and later) | AUC there [Hanley–McNeil {FAMILY_TEXT}] | lead: median collapse step − that step (< 0: "
             "after the collapse) | AUC at the first reading |", "|---|---|---|---|---|"]
    for name, curve in curves.items():
        first, s0 = firsts[name], min(curve)
        where = (f"{first} | {curve[first].value:.2f} [{curve[first].low:.2f}, {curve[first].high:.2f}], "
                 f"p = {curve[first].p:.3g} | {statistics.median(steps) - first if steps else '—'}"
                 if first is not None else "never | — | —")
        lines.append(f"| {name} | {where} | step {s0}: {curve[s0].value:.2f} (p = {curve[s0].p:.2g}) |")
    return lines + [""] if curves else []


def rho_table(rhos: dict[str, dict], firsts: dict[str, int | None]) -> list[str]:
    """Per early predictor: Spearman's ρ with the final completeness (a), from the first step it holds on."""
    lines = ["| early predictor | first step from which ρ with the final completeness (a) excludes 0 (there and "
             f"later) | ρ there [Fisher-z {FAMILY_TEXT}] | ρ at the first reading |", "|---|---|---|---|"]
    for name, curve in rhos.items():
        first, s0 = firsts[name], min(s for s, v in curve.items() if math.isfinite(v[0]))
        where = f"{first} | {curve[first][0]:+.2f} [{curve[first][1]:+.2f}, {curve[first][2]:+.2f}]" \
            if first is not None else "never | —"
        lines.append(f"| {name} | {where} | step {s0}: {curve[s0][0]:+.2f} |")
    return lines + [""] if rhos else []


def speed_basin_lines(scale: Scale, fig_dir: str, index: int) -> list[str]:
    """Q3: per early predictor, its AUC for the binary outcome and its ρ with the final completeness (a) (the
    continuous outcome: no calibration, no split needed), from the earliest step each holds on; the
    answer and the curves' figure."""
    cell_runs = scale.groups.get(key(SPEED_BASIN[0]), [])
    if len(cell_runs) < 2:
        return []
    runs, collapsed, steps, rule = outcomes(cell_runs, scale)
    horizon = max(r.steps for r in cell_runs)
    curves = {name: curve for name, at in PREDICTORS.items() if (curve := auc_over_time(runs, collapsed, at))}
    firsts = {name: first_separating(curve) for name, curve in curves.items()}
    # completeness, not RankMe(z): it is read for every run (a z that shrank toward 0 has a noise rank, and
    # leaving such runs out drops the most collapsed seeds)
    final = {id(r): c for r in cell_runs if (c := completeness(r)) is not None}
    kept = [r for r in cell_runs if id(r) in final]
    rhos = {name: c for name, at in PREDICTORS.items() if (c := rho_over_time(kept, [final[id(r)] for r in kept], at))}
    rho_firsts = {name: first_correlated(curve) for name, curve in rhos.items()}
    lines = [f"### Q3 at {scale.label}: speed or basin?", "", f"`{SPEED_BASIN[0].name}`: {sum(collapsed)} of "
             f"{len(runs)} seeds collapsed ({rule}); median collapse step "
             + (f"{statistics.median(steps):g}" if steps else "—")
             + (f" ({missing} collapsed seed(s) without a step: a last reading back past the threshold)"
                if (missing := steps_missing(runs, scale)) else "") + ".", "", *auc_table(curves, firsts, steps),
             *rho_table(rhos, rho_firsts), *q3_answer(scale.label, collapsed, steps, rule, curves, firsts, horizon)]
    lines += [rho_answer(rhos, rho_firsts, len(kept), horizon), ""] if rhos else []
    if curves or rhos:
        name = f"q3_auc{index}.png"
        plot_early_warning(curves, rhos, statistics.median(steps) if steps else None, os.path.join(fig_dir, name),
                           f"Q3 at {scale.label}")
        lines += [f"![Q3 at {scale.label}](figures/findings/{name})", ""]
    return lines


def paired(rows: dict[str, dict], name: str, metric: str) -> str:
    """Mean paired difference (condition − f(x)) over seeds with its Student-t 95 % interval."""
    return mean_interval(paired_differences(rows, name, metric))


def feature_choice_lines(scale: Scale, fig_dir: str, index: int) -> list[str]:
    """Q2: every test-time input against f(x), seed by seed, per encoder (kNN / linear probe points);
    the answer and a figure of the kNN differences."""
    if (read := feature_choice(scale)) is None or not read[1]:
        return []
    result, encoders = read
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
    diffs = {f"{encoder} ({len(rows)} seeds)": {n: t_interval(d) for n in names
                                                if n != "f(x)" and (d := paired_differences(rows, n, "knn"))}
             for encoder, rows in encoders.items()}  # one seed: no interval, the panel title says so
    figure = f"q2_inputs{index}.png"
    plot_feature_choice(diffs, os.path.join(fig_dir, figure), f"Q2 at {scale.label}: each input's kNN − f(x)")
    return lines + ["", *q2_answer(scale.label, encoders), f"![Q2 at {scale.label}](figures/findings/{figure})", ""]


def q1_lines(scale: Scale, base: dict, fig_dir: str, index: int) -> list[str]:
    """Q1's table, its augmentation axis, the answer and the depths-over-time figure; [] when not run, or
    where the three controls did not run (a folder of grid Q2 alone: its Q1 cells are read for features)."""
    if not has_controls(scale):
        return []
    body, aug = factorial_lines(scale, base), augmentation_lines(scale)
    if not body and not aug:
        return []
    lines = [f"### Q1 at {scale.label}: does eq. (10) collapse?", "", *body]
    lines += ["Augmentation strength: (a) P(complete collapse) [95 %]; (b) z collapsed, per crop arm:", "",
              *aug] if aug else []
    lines += q1_answer(scale, base)
    groups = {k: runs for c in [CONTROLS[0], *FACTORIAL] if (runs := scale.groups.get(k := key(c)))}
    figure = f"q1_depths{index}.png"
    plot_depths(groups, os.path.join(fig_dir, figure), f"Q1 at {scale.label}: each depth over the steps "
                "(mean over seeds)")
    return lines + [f"![Q1 at {scale.label}](figures/findings/{figure})", ""]


def questions_section(scales: list[Scale], baselines: list[dict], fig_dir: str) -> list[str]:
    """The section for every scale that ran grid Q1, Q1-aug, Q2 or Q3, with their figures in
    `fig_dir`; [] when none did."""
    lines: list[str] = []
    for i, (scale, base) in enumerate(zip(scales, baselines)):
        lines += q1_lines(scale, base, fig_dir, i) + feature_choice_lines(scale, fig_dir, i)
        lines += speed_basin_lines(scale, fig_dir, i)
    if not lines:
        return []
    return ["## The seed's open questions", "",
            "docs/open_questions.md states the questions, the design and what each column reads; complete "
            f"collapse (a) at completeness ≥ {COMPLETE} (the loss toward its minimum: 1 − final/first for the "
            "squared L2), with Clopper–Pearson intervals over seeds. Each question ends in an answer computed "
            "from the same readings: a cell's outcome is the reading most of its seeds reached.", "",
            *across_lines(scales), *lines]
