"""The tables of findings.md: calibration per scale, the verdict matrix (claim × scale, with
"scale-dependent" / "optimiser-dependent" where decided verdicts differ), seed-paired tests,
the literature table and each scale's run groups at the three levels."""
from __future__ import annotations

import math
import statistics

from siamdyn.experiments.claims import CLAIMS, PAIRED, Claim
from siamdyn.experiments.levels import (HEADS, completeness, head_state, loss_as_cosine, position, representation,
                                        z_shrank)
from siamdyn.experiments.levels import time_to_collapse as head_ttc
from siamdyn.experiments.readings import window_mean
from siamdyn.experiments.report_format import mean_std as _ms
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import sign_test, t_interval
from siamdyn.experiments.verdicts import Verdict

DECIDED = ("supported", "contradicted")


def negative_control_cell(scale: Scale, base: dict) -> str:
    """How healthy the scale's healthy reference is: its completeness (level a), how far its
    RankMe(p) moves across the window (settled ≤ 30 %), its kNN above random init (level c)."""
    runs = scale.controls
    moves = [(max(p) - min(p)) / max(p) for r in runs
             if (p := [r.heldout[s]["heldout/p_erank"] for s in r.window_steps()])]
    knn = [x["knn_over_random"] for r in runs if (x := representation(r, base))["knn_over_random"] is not None]
    return (f"{_ms([completeness(r) for r in runs])} / {100 * max(moves):.0f} % / {_ms(knn, '{:+.1f}')}"
            if moves else "—")


def calibration_table(scales: list[Scale], baselines: list[dict], problems: list[list[str]]) -> list[str]:
    lines = ["| scale | controls | RankMe(z): positive / negative / collapsed below / healthy above | "
             "RankMe(p): same | negative control: completeness / RankMe(p) moves in window / kNN − random init | "
             "random-init kNN / linear % (mean ± SD over draws) |", "|---|---|---|---|---|---|"]
    for s, base, prob in zip(scales, baselines, problems):
        cells = []
        for head in HEADS:
            cal = s.calibration.get(head)
            if cal is None:
                cells.append("—")
                continue
            at = lambda pos, cal=cal: math.exp(cal.positive + pos * (cal.negative - cal.positive))  # noqa: E731
            cells.append(f"{math.exp(cal.positive):.1f} / {math.exp(cal.negative):.1f} / "
                         f"{at(cal.collapsed_below):.1f} / {at(cal.healthy_above):.1f}")
        ref = " / ".join(random_init_cell(base, f"random_init_kaiming_{name}") for name in ("weighted_knn", "linear"))
        lines.append(f"| {s.label} | {'calibrate' if not prob else 'fail: ' + '; '.join(prob)} | "
                     + " | ".join(cells) + f" | {negative_control_cell(s, base)} | {ref} |")
    return lines + [""]


def random_init_cell(base: dict, key: str) -> str:
    """A random-init reading of baseline.json: mean ± SD over its draws (the draw alone in older records)."""
    if key not in base:
        return "—"
    draws = base.get(f"{key}_by_seed")
    return f"{base[key]:.1f} ± {base[key + '_sd']:.1f} ({len(draws)})" if draws else f"{base[key]:.1f} (1)"


def dependence(by: list[tuple[Scale, str]]) -> str | None:
    """Where values read at several scales differ: "scale-dependent" (they differ between widths under one
    optimiser, or between horizons), "optimiser-dependent" (between optimisers at one width and horizon), both,
    or "differs" (no two share an optimiser, or a width and horizon), with each value at its scale; None where
    they agree (or fewer than two scales with runs read them)."""
    by = [(s, val) for s, val in by if s.setting is not None]
    if len({val for _, val in by}) < 2:
        return None
    optimisers = {s.setting[1] for s, _ in by}
    sizes = {s.setting[0::2] for s, _ in by}  # width and steps
    same_opt = [{val for s, val in by if s.setting[1] == o} for o in optimisers]
    same_size = [{val for s, val in by if s.setting[0::2] == w} for w in sizes]
    kind = ("scale-dependent" if any(len(v) > 1 for v in same_opt) else "") + \
           (" optimiser-dependent" if any(len(v) > 1 for v in same_size) else "")
    steps_differ = len({s.setting[2] for s, _ in by}) > 1
    moves = ", ".join(f"{val} at {s.label if steps_differ else f'w{s.setting[0]} {s.setting[1]}'}" for s, val in by)
    return f"{kind.strip() or 'differs'} ({moves})"


def across(verdicts: list[dict[str, Verdict]], scales: list[Scale]) -> str:
    """Whether the decided verdicts agree across scales (same optimiser) and optimisers (same width), per
    readout; where each readout agrees with itself, whether the readouts (a, z, p) agree with each other."""
    notes = []
    for key in ("a", "z", "p"):
        by = [(s, v[key].value) for s, v in zip(scales, verdicts) if key in v and v[key].value in DECIDED]
        if (differs := dependence(by)) is not None:
            notes.append(f"{'' if key == 'a' else key + ': '}{differs}")
    if notes:
        return "; ".join(notes)
    decided = [(s, key, v.value) for s, vs in zip(scales, verdicts) for key, v in vs.items() if v.value in DECIDED]
    if not decided:
        return "not decided at any scale"
    if len({value for _, _, value in decided}) > 1:  # z at one scale against p at another: still a disagreement
        return "the readouts differ (" + ", ".join(f"{key}: {value} at {s.label}" for s, key, value in decided) + ")"
    where = list(dict.fromkeys(s.label for s, _, _ in decided))
    if len(where) == 1:
        ran = sum(_ran(vs) for vs in verdicts)
        rest = "not run at any other scale" if ran == 1 else \
            f"undecided at the {ran - 1} other scale{'s' if ran > 2 else ''} that ran it"
        return f"{decided[0][2]} at {where[0]} only ({rest})"
    return f"{decided[0][2]} wherever decided ({len(where)} of {len(scales)} scales)"


def _ran(readouts: dict[str, Verdict]) -> bool:
    """Whether a scale ran a claim's cells: a readout read them, or every readout failed its controls (a
    head's "protocol failed" beside another's "not run" says nothing about the cells)."""
    values = [v.value for v in readouts.values()]
    return any(x not in ("not run", "protocol failed") for x in values) or all(x == "protocol failed" for x in values)


def _short(v: dict[str, Verdict]) -> str:
    if set(v) <= {"a", "-"}:
        only = next(iter(v.values()))
        return f"**{only.value}** {only.statistic}"
    return "<br>".join(f"{h}: **{x.value}** {x.statistic}" for h, x in v.items())


def collapsed_counts(scale: Scale, cells: tuple[str, ...]) -> str:
    """"(b) collapsed: z k/n, p k/n" — a level-(a) claim's runs read at level (b) too."""
    runs = scale.runs(cells)
    if not runs or not all(scale.calibration.get(h) for h in HEADS):
        return ""
    # a head whose controls' bounds overlap has no collapsed state to count (its verdicts: protocol failed)
    counts = [f"{h} {sum(head_state(r, h, scale.calibration[h]) == 'collapsed' for r in runs)}/{len(runs)}"
              if scale.calibration[h].separated else f"{h} — (not calibrated)" for h in HEADS]
    return "<br>(b) collapsed: " + ", ".join(counts)


def verdict_matrix(scales: list[Scale], verdicts: dict[str, list[dict[str, Verdict]]]) -> list[str]:
    lines = ["| claim | level | " + " | ".join(s.label for s in scales) + " | across scales and optimisers |",
             "|---|---|" + "---|" * len(scales) + "---|"]
    for c in CLAIMS:
        row = verdicts[c.key]
        cells = [_short(v) + (collapsed_counts(s, c.cells) if c.level == "a" else "") for s, v in zip(scales, row)]
        lines.append(f"| **{c.key}** {c.text} | {c.level} | " + " | ".join(cells) + f" | {across(row, scales)} |")
    return lines + [""]


def axes_summary(scales: list[Scale], verdicts: dict[str, list[dict[str, Verdict]]]) -> str:
    """One line under the matrix: which claims depend on the scale, on the optimiser, differ between readouts,
    are decided at one scale alone (no axis tested), or nowhere."""
    labels = {c.key: across(verdicts[c.key], scales) for c in CLAIMS}
    tests = {"scale-dependent": lambda v: "scale-dependent" in v,
             "optimiser-dependent": lambda v: "optimiser-dependent" in v,
             "readouts or unpaired axes differ": lambda v: v.startswith("the readouts") or "differs (" in v,
             "the same verdict at every scale that decides it": lambda v: "wherever" in v,
             "decided at one scale only": lambda v: " only (" in v,
             "not decided at any scale": lambda v: v.startswith("not decided")}
    parts = [f"{name}: {', '.join(k for k, v in labels.items() if test(v)) or 'none'}" for name, test in tests.items()]
    return "Across the axes: " + "; ".join(parts) + "."


def paired_table(scales: list[Scale]) -> list[str]:
    """Seed-paired comparisons of the level-(b) positions of cells that share seeds: the paired t interval of
    the mean difference (it can decide at 3 pairs) and the sign test (whose smallest p is 0.25 at 3 pairs,
    0.0625 at 5: it cannot reject below 6)."""
    lines = ["| comparison | scale | head | mean difference [paired t 95 % CI] | higher in changed cell / pairs | "
             "sign test p |", "|---|---|---|---|---|---|"]
    for name, changed, base in PAIRED:
        for s in scales:
            by_seed = {r.cfg.seed: r for r in s.runs([base])}  # runs(): a cell's SAME_CELL twin counts too
            for head in HEADS:
                cal = s.calibration.get(head)
                diffs = [pc - pb for r in s.runs([changed]) if r.cfg.seed in by_seed
                         and (pc := position(r, head, cal)) is not None
                         and (pb := position(by_seed[r.cfg.seed], head, cal)) is not None]
                if diffs:
                    pos, n, p = sign_test(diffs)
                    mean, lo, hi = t_interval(diffs)
                    ci = f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}]" if len(diffs) > 1 else f"{mean:+.2f} (one pair)"
                    lines.append(f"| {name} | {s.label} | {head} | {ci} | {pos}/{n} | {p:.3f} |")
    return lines + [""]


def literature_table(scales: list[Scale], verdicts: dict[str, list[dict[str, Verdict]]]) -> list[str]:
    lines = ["| claim | published | checked against the text | ours, per scale | ours against the published | "
             "context |", "|---|---|---|---|---|---|"]
    for c in CLAIMS:
        ours = "; ".join(f"{s.label}: " + ", ".join(f"{k + ' ' if k in HEADS else ''}{v.value}" for k, v in vs.items())
                         for s, vs in zip(scales, verdicts[c.key]))
        lines.append(f"| {c.key} | {c.source} | {c.checked} | {ours} | {agreement(c, across(verdicts[c.key], scales))} "
                     f"| {c.context} |")
    return lines + [""]


def agreement(claim: Claim, across_label: str) -> str:
    """Our verdicts against the published result: each claim states what its source reports, so supported
    wherever decided is agreement and contradicted is disagreement."""
    if claim.checked == "not a published result":
        return "— (no published result)"
    if "no run" in claim.checked:
        return "— (the source argues it, reports no run)"
    for start, word in (("supported", "agree"), ("contradicted", "**disagree**"), ("not decided", "not decided")):
        if across_label.startswith(start):
            return word
    return "mixed (see the matrix)"


CELL_HEAD = ["| run group | seeds | (a) completeness | (a) loss as cos | (b) position z | (b) position p | "
             "states z (c/p/h) | states p (c/p/h) | median step of collapse z / p | (c) backbone RankMe | "
             "(c) kNN − random init | (c) linear − random init |", "|---" * 12 + "|"]


def cell_row(key: str, scale: Scale, base: dict) -> str:
    runs = scale.groups.get(key, [])
    cal = scale.calibration
    states = {h: [head_state(r, h, cal.get(h)) for r in runs] for h in HEADS}
    counts = {h: "/".join(str(states[h].count(x)) for x in ("collapsed", "partial", "healthy"))
              if cal.get(h) and cal[h].separated else "— (not calibrated)" for h in HEADS}
    if shrunk := sum(map(z_shrank, runs)):  # said, not removed: the controls' calibration stays as it is
        counts["z"] += f" ({shrunk} with z shrunk below ¼ of its start)"
    ttc = {h: [t for r in runs if cal.get(h) and (t := head_ttc(r, h, cal[h])) is not None] for h in HEADS}
    rep = [representation(r, base) for r in runs]
    return (f"| {key} | {len(runs)} | {_ms([completeness(r) for r in runs])} | "
            f"{_ms([loss_as_cosine(r) for r in runs])} | "
            + " | ".join(_ms([position(r, h, cal.get(h)) for r in runs]) for h in HEADS) + " | "
            + " | ".join(counts[h] for h in HEADS) + " | "
            + " / ".join(f"{statistics.median(ttc[h]):g}" if ttc[h] else "—" for h in HEADS) + " | "
            f"{_ms([window_mean(r, 'heldout/feature_erank') for r in runs], '{:.1f}')} | "
            f"{_ms([x['knn_over_random'] for x in rep], '{:+.1f}')} | "
            f"{_ms([x['linear_over_random'] for x in rep], '{:+.1f}')} |")


def horizon_line(scales: list[Scale], verdicts: dict[str, list[dict[str, Verdict]]]) -> str:
    """Each collapse claim (either prediction: a contradicted "collapses" is a "does not collapse" too) with
    the longest run that decided it: "not within N steps"."""
    parts = []
    for c in CLAIMS:
        if c.predicted not in ("collapsed", "not collapsed"):
            continue
        decided = [s for s, vs in zip(scales, verdicts[c.key]) if s.setting and
                   any(v.value in DECIDED for v in vs.values())]
        if not decided:
            parts.append(f"{c.key} not decided")
            continue
        longest = max(s.setting[2] for s in decided)
        parts.append(f"{c.key} to {longest} steps ({', '.join(s.label for s in decided if s.setting[2] == longest)})")
    return ("Horizon: a \"does not collapse\" verdict means \"not within the run\"; the longest run that decides "
            "each collapse claim: " + "; ".join(parts)
            + ". BYOL reports its failures after 300 epochs, SimSiam after 100.")


def critical_lr_lines(scales: list[Scale]) -> list[str]:
    """Per scale and head: the logistic fit of P(collapse) on log10 of the predictor's lr
    multiplier over the H4 ladder (the control is the λ = 1 rung), with its critical λ*."""
    from siamdyn.experiments.stats import logistic_critical
    ladder = next(c for c in CLAIMS if c.key == "H4a")
    lines = []
    for s in scales:
        for head in HEADS:
            pairs = [(x, head_state(r, head, s.calibration.get(head)) == "collapsed")
                     for x, cell in zip(ladder.rungs, ladder.cells) for r in s.groups.get(cell, [])]
            if len({x for x, _ in pairs}) < 3 or not (s.calibration.get(head) and s.calibration[head].separated):
                continue
            fit = logistic_critical([x for x, _ in pairs], [e for _, e in pairs])
            counts = ", ".join(f"λ = {x:g}: {sum(e for y, e in pairs if y == x)}/{sum(y == x for y, _ in pairs)}"
                               for x in ladder.rungs)
            est = (f"λ* = {fit.critical:.3g} [delta-method 95 % {fit.low:.3g}, {fit.high:.3g}], slope {fit.b:+.2f}"
                   if fit.critical is not None else "it did not converge")
            if fit.separated:
                what = (f"the outcomes separate perfectly between λ = {fit.bracket[0]:g} and {fit.bracket[1]:g} (no "
                        f"maximum-likelihood fit); Firth's penalised fit: {est}")
            elif fit.critical is None and not fit.firth:
                what = "no fit: every run has the same outcome"
            elif fit.firth:
                what = f"the outcomes meet at one rung (no maximum-likelihood fit); Firth's penalised fit: {est}"
            else:
                what = est
            lines.append(f"- {s.label}, {head}: collapsed {counts}; {what}")
    return lines + [""] if lines else []
