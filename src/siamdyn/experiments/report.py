"""`siamdyn report DIR`: findings.md (+ figures) from the run directories of an experiment alone.

DIR is one experiment folder, or a folder of them, one per scale × optimiser (scales.py).
Order: protocol and compute, calibration per scale (the controls), the verdict matrix (claim ×
scale at the claim's level), seed-paired tests, the literature table, the horizon, each
scale's run groups at the three levels with their curves, the gradient split, then H7–H9.
"""
from __future__ import annotations

import os
import re

from siamdyn.inputs import open_input
from siamdyn.runs import run_document
from siamdyn.experiments.early_warning import ENCODER_GROUPS
from siamdyn.experiments.grids import BUDGETS, CORE, FORCED, NEGATIVE, POSITIVE
from siamdyn.experiments.levels import COMPLETE, HEADS, time_to_collapse
from siamdyn.experiments.readings import WINDOW, Run
from siamdyn.experiments.report_figures import plot_positions
from siamdyn.experiments.report_format import mean_std as _ms
from siamdyn.experiments.report_tables import (CELL_HEAD, axes_summary, calibration_table, cell_row,
                                               critical_lr_lines, horizon_line, literature_table, paired_table,
                                               verdict_matrix)
from siamdyn.experiments.scales import (Scale, all_verdicts, controls_problems, has_controls, load_scales,
                                        scale_baseline)
from siamdyn.errors import ConfigError, SiamdynError
from siamdyn.outputs import atomic_write_text, os_error_line, output_dir

PROTOCOL = (f"Readouts (docs/protocol.md): (a) complete collapse — completeness = min(centre-vector norm "
            f"of p, the loss as a cosine), complete at ≥ {COMPLETE}; (b) dimensional collapse per head — log RankMe "
            "on the held-out batch placed between the scale's own controls (0 = positive controls, 1 = negative), "
            "collapsed below the positive controls' 95 % prediction bound; (c) the representation — backbone RankMe, "
            "kNN and linear probe minus a random-init encoder of the same width. Every number is a mean over the last "
            f"{WINDOW:.0%} of the steps; verdicts are three-valued with Student-t 95 % intervals over seeds "
            "(Clopper–Pearson for P(collapse), Fisher-z for Spearman's ρ, Welch for a plateau).")


TITLE = "# Findings: the seed's claims on real images, across scale and optimiser"


def gradient_section(groups: dict[str, list[Run]]) -> list[str]:
    """‖g2‖/‖g1‖ and cos(g1, g2) at the first probed steps, before any collapse."""
    stages = ENCODER_GROUPS
    lines = ["## The gradient split before any collapse", "",
             "‖g2‖/‖g1‖ (and cos(g1, g2)) of the encoder's two gradient terms (docs/seed.md §3) at steps 1, 5 "
             "and 10 (mean ± std over seeds), and per stage at step 1; the outcome of each term alone is the "
             "negative control (term 1 only) and H5 (term 2 only).", "",
             "| run group | step 1 | step 5 | step 10 | " + " | ".join(f"{g} (step 1)" for g in stages) + " |",
             "|---" * (4 + len(stages)) + "|"]
    for key in (f"controls/{NEGATIVE}", *[f"controls/{p}" for p in POSITIVE], "H5/term2-only"):
        by_step: dict[int, list[dict]] = {}
        for r in groups.get(key, []):
            for p in r.probes:
                by_step.setdefault(p["step"], []).append(p)
        if not by_step:
            continue

        def at(step: int, k: str, by_step: dict = by_step) -> str:
            return _ms([p[k] for p in by_step.get(step, []) if k in p])
        cells = [f"{at(t, 'g2_over_g1')} (cos {at(t, 'cos_g1_g2')})" for t in (1, 5, 10)]
        lines.append(f"| {key} | " + " | ".join(cells + [at(1, f"g2_over_g1/{g}") for g in stages]) + " |")
    return lines + [""]


def budget_settings(budget: str) -> dict:
    """What a budget's runs were trained with: its settings, and the optimiser an axis forces over them."""
    return {**BUDGETS[budget], **FORCED.get(budget, {})}


def header(out: str, scales: list[Scale], dest: str) -> list[str]:
    lines = [TITLE, "", PROTOCOL, ""]
    for s in scales:
        runs = [r for rs in s.groups.values() for r in rs]
        budget = s.meta.get("budget", "?")
        wall = sum(x["wall_time_s"] for x in s.meta.get("sessions", []))
        lines.append(f"- **{s.label}** (`{os.path.relpath(s.path, out)}`, budget `{budget}`"
                     + (f": {', '.join(f'{k}={v}' for k, v in budget_settings(budget).items())}"
                        if budget in BUDGETS else "")
                     + f"): {len(runs)} finished runs, {sum(r.summary['wall_time_s'] for r in runs) / 60:.0f} min of "
                     f"their own wall time, {wall / 60:.0f} min of `siamdyn experiment`; machines: {machines(runs)}")
    lines += ["", "Commands: `bash bench/findings.sh` trains every CPU column (resumable: finished runs are skipped; "
              "the open questions' scales through bench/questions.sh), copies the run records and writes this "
              "report; `bash bench/gpu_findings.sh OUT` is the GPU column (untar its archive beside the others); "
              f"`siamdyn report {out}" + (f" --out {dest}`" if dest != out else "`") + " rewrites this report from "
              "the records alone (docs/protocol.md, Regenerate)", ""]
    return lines


def scale_section(scale: Scale, base: dict, fig_dir: str, index: int) -> list[str]:
    ttc = {h: [t for name in POSITIVE for r in scale.groups.get(f"controls/{name}", [])
               if scale.calibration.get(h) and (t := time_to_collapse(r, h, scale.calibration[h])) is not None]
           for h in HEADS}
    lines = [f"## {scale.label}", "",
             "Positive controls collapse (level b) by step " + ", ".join(
                 f"{max(ttc[h]) if ttc[h] else '—'} ({h})" if (c := scale.calibration.get(h)) and c.separated
                 else f"— ({h}: not calibrated)" for h in HEADS)
             + f" of {scale.controls[0].steps if scale.controls else '?'}. Raw-pixel kNN on this bank "
             f"{base.get('raw_pixels_weighted_knn', float('nan')):.1f} %. Each cell: mean ± SD over its seeds; "
             "(c) against the mean of the random-init draws.", "", *CELL_HEAD]
    keys = [k for k, runs in scale.groups.items() if runs]
    lines += [cell_row(k, scale, base) for k in keys]
    shown = {k: scale.groups[k] for k in keys if k.startswith("controls/") or k in _CORE_KEYS}
    if shown and scale.calibration.get("p"):
        name = f"scale{index}.png"
        plot_positions(shown, scale.calibration, os.path.join(fig_dir, name), scale.label)
        lines += ["", f"![{scale.label}](figures/findings/{name})"]
    return lines + [""]


_CORE_KEYS = {f"{c.grid}/{c.name}" for c in CORE}


def machines(runs: list[Run]) -> str:
    """'N runs on CPU (precision)' per machine kind the runs recorded; older runs recorded none."""
    kinds: dict[str, int] = {}
    for r in runs:
        doc = run_document(r.path)
        if doc is None:
            raise ConfigError(f"{os.path.join(r.path, 'config.yaml')} is empty or damaged (not the config.yaml "
                              "siamdyn train writes); train that run again or remove its folder")
        versions = doc.get("versions") if isinstance(doc.get("versions"), dict) else {}
        cpu = versions.get("cpu", "CPU not recorded (runs from before siamdyn 0.3)")
        kind = f"{cpu}, {versions.get('host_cpus', '?')} cores, {doc['config'].get('precision', 'fp32')}"
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{n} runs on {k}" for k, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def claims_sections(scales: list[Scale]) -> list[str]:
    """The claims' tables (verdicts, seed-paired tests, the H4 fit, the literature, the horizon) over the
    scales whose three controls ran (scales.has_controls): elsewhere no claim can be read."""
    claimed = [s for s in scales if has_controls(s)]
    left_out = ", ".join(s.label for s in scales if not has_controls(s))
    if not claimed:
        return ["## Verdicts", "", f"No scale here ran all three controls ({left_out}), so no claim is read.", ""]
    verdicts = all_verdicts(claimed)
    lines = ["## Verdicts", "", "Each claim at its level (a, b), per scale; level (b) gives z and p apart"
             + (f"; {left_out}: not all three controls ran (left out of the claims' tables: this matrix, the paired "
                "comparisons, the H4 fit, the literature and the horizon)." if left_out else "."),
             "", *verdict_matrix(claimed, verdicts), axes_summary(claimed, verdicts), ""]
    lines += ["## Seed-paired comparisons", "", "Cells that share seeds start from the same weights and data "
              "order; the paired t interval is that of the mean difference of level-(b) positions (changed − "
              "base), the sign test counts the seeds where the changed cell's position is higher (it cannot "
              "reach p < 0.05 below 6 pairs).", "",
              *paired_table(claimed)]
    if critical := critical_lr_lines(claimed):
        lines += ["## The critical predictor lr (H4)", "", "P(collapse) against the predictor's lr multiplier λ "
                  "(logistic in log10 λ; docs/protocol.md). The λ = 1 rung is the healthy control, whose runs anchor "
                  "position 1 of the scale, so its 0 collapsed is near-certain by construction. For comparison, BYOL "
                  "tab. 21 (τ = 0, 300 epochs): λ = 1 → 5.5 %, λ = 2 → 62.8 %, so its λ* lies between 1 and 2.",
                  "", *critical]
    lines += ["## Literature", "", "Each number was looked up in the paper's text; the third column says how far "
              "that succeeded, docs/literature_check.md holds the quotes and says what could not be checked. A claim "
              "states what its source reports: supported here is agreement, contradicted disagreement.", "",
              *literature_table(claimed, verdicts)]
    return lines + [horizon_line(claimed, verdicts), ""]


FIGURE_LINK = re.compile(r"figures/findings/([^)\s]+)")


def earlier_figures(path: str, overwrite: bool) -> set[str]:
    """The report owns DEST/findings.md and DEST/figures/findings/ and regenerates them on every call (that is
    how docs/findings.md stays current). A findings.md whose first line is not the report's title was written by
    someone else: replaced only with `overwrite`, and its figures are never pruned. Returns the figures the
    report's own earlier findings.md linked to: only those may be pruned (one read of the file for both)."""
    if not os.path.lexists(path):
        return set()
    try:
        with open_input(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = None  # a folder or an unreadable file in the way: not the report's either
    if text is not None and text.split("\n", 1)[0] == TITLE:
        return set(FIGURE_LINK.findall(text))
    if overwrite:
        return set()
    raise SiamdynError(f"{path} exists and was not written by siamdyn report; pass --overwrite to replace it, "
                       "or choose another --out")


def prune_figures(fig_dir: str, earlier: set[str], text: str) -> None:
    """Remove the figures the earlier report showed and this one does not (their names follow the scales'
    order, so a new scale renames them); a file the report never linked to is left alone."""
    for name in sorted(earlier - set(FIGURE_LINK.findall(text))):
        target = os.path.join(fig_dir, name)
        try:
            if os.path.isfile(target):
                os.unlink(target)
        except OSError as e:
            raise SiamdynError(os_error_line(target, e) + " (findings.md itself was written)") from None


def write_report(out: str, dest: str | None = None, overwrite: bool = False) -> str:
    """Write DEST/findings.md (default DEST = OUT) and its figures under DEST/figures/findings/,
    replacing the report's own earlier ones (earlier_figures); every file through the one
    writer (outputs.py: atomic, an OSError is one line)."""
    dest = dest or out
    path = os.path.join(dest, "findings.md")
    earlier = earlier_figures(path, overwrite)
    scales = load_scales(out)
    fig_dir = output_dir(os.path.join(dest, "figures", "findings"), None)
    baselines = [scale_baseline(s) for s in scales]
    problems = [controls_problems(s) for s in scales]
    lines = header(out, scales, dest)
    lines += ["## Calibration: each scale's controls", "", *calibration_table(scales, baselines, problems)]
    lines += claims_sections(scales)
    from siamdyn.experiments.report_questions import questions_section
    lines += questions_section(scales, baselines, fig_dir)
    for i, (s, base) in enumerate(zip(scales, baselines)):
        lines += scale_section(s, base, fig_dir, i)
    standard = next((s for s in scales if s.groups.get(f"controls/{NEGATIVE}") and s.groups.get("H5/term2-only")),
                    None)
    if standard is not None:
        lines += gradient_section(standard.groups)
        from siamdyn.experiments.report_analyses import analysis_sections
        lines += analysis_sections(standard.path, fig_dir)
    text = "\n".join(lines)
    atomic_write_text(path, text + "\n")
    prune_figures(fig_dir, earlier, text)
    return path
