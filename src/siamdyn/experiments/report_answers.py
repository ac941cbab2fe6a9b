"""The answer paragraphs of "The seed's open questions" in findings.md (docs/open_questions.md):
each question answered in a few sentences computed from the same readouts as its table, naming the
level (head or backbone), the crop strengths and the scale it holds at. A cell's outcome is the
reading most of its seeds reached; the sentences restate measured counts and intervals only."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable

from siamdyn.experiments.early_warning import AUC, BASELINE, FAMILY_ALPHA, FAMILY_TEXT, SPEED
from siamdyn.experiments.feature_choice import BLUR, REFERENCE_K
from siamdyn.experiments.grids import FACTORIAL
from siamdyn.experiments.levels import COMPLETE, completeness, representation
from siamdyn.experiments.question_readouts import (AUG_BASES, collapse_and_knn, collapsed, crop_arms, factor_values,
                                                   key, knn_change_from, p_complete, paired_differences,
                                                   steps_missing, z_state)
from siamdyn.experiments.readings import Run
from siamdyn.experiments.report_format import mean_interval
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import t_interval

CENTRES = {"eq10": "Q1/eq10", "SimSiam": "controls/simsiam"}


@dataclass
class Outcome:
    """What most of a cell's read seeds reached (`label`, compared between cells; "split" or "unread" is
    compared with nothing), every run's reading counted, and P(complete collapse) with its interval."""
    label: str
    counts: dict[str, int]
    n: int
    complete: str
    read: int = 0  # runs with a reading (not UNREAD): the majority is taken over these

    @property
    def decided(self) -> bool:  # a cell whose seeds split, or that nothing reads, has no outcome to compare
        return self.label not in ("split", "unread")

    @property
    def detail(self) -> str:
        return ", ".join(f"{k} {v}/{self.n}" for k, v in self.counts.items())

    def __str__(self) -> str:
        unread = f" read, {self.n - self.read} unread" if self.read < self.n else ""
        shown = f"in {self.counts[self.label]}/{self.read} runs{unread}" if self.decided else self.detail
        return f"{self.label} ({shown}; (a) P(complete) {self.complete})"


UNREAD = "(b) unread"
# How a run's z reading (question_readouts.z_state) reads in an answer; a state reads "z <state> (b)".
Z_WORDS = {"shrank": "z shrank toward 0", None: UNREAD,
           "nearer collapsed": "z nearer the collapsed controls (b, uncalibrated)",
           "nearer healthy": "z nearer SimSiam (b, uncalibrated)"}


def run_reading(run: Run, scale: Scale) -> str:
    """One run's reading, first that applies: complete collapse (a); z shrunk toward 0; the z head's state
    at level (b) where the controls calibrate z, else which control it sits nearer; else (b) unread."""
    if (c := completeness(run)) is not None and c >= COMPLETE:
        return "complete collapse (a)"
    z = z_state(run, scale)
    return Z_WORDS.get(z, f"z {z} (b)")


def outcome(runs: list[Run], scale: Scale) -> Outcome:
    """The reading more than half of the cell's runs have (run_reading: one per run, so a run collapsed
    completely is never also counted at (b)); "unread" where that is "(b) unread" (an unread run is read
    by (a) as not complete, which says nothing about its z), "split" where no reading has a majority."""
    readings = [run_reading(r, scale) for r in runs]
    counts = {x: readings.count(x) for x in dict.fromkeys(readings)}
    top = max(counts, key=counts.get) if counts else None
    label = "split" if top is None or 2 * counts[top] <= len(runs) else "unread" if top == UNREAD else top
    return Outcome(label, counts, len(runs), p_complete(runs)[2], len(runs) - counts.get(UNREAD, 0))


def knn_over_random(runs: list[Run], base: dict) -> str:
    vals = [x for r in runs if (x := representation(r, base)["knn_over_random"]) is not None]
    return f"backbone kNN − random init {mean_interval(vals)}" if vals else "backbone kNN not read"


def sign(values: list[float]) -> str:
    """Which way a paired difference goes: below or above 0 by its 95 % interval, else neither."""
    if len(values) < 2:
        return "unread" if not values else "unread (one seed)"
    _, lo, hi = t_interval(values)
    return "below 0" if hi < 0 else "above 0" if lo > 0 else "not separated from 0"


def changed(cell_runs: list[Run], centre_runs: list[Run]) -> list[str]:
    """"factor value" for each factor in which a cell differs from a centre."""
    a, b = factor_values(cell_runs[0]), factor_values(centre_runs[0])
    return [f"{name} {a[name]}" for name in a if a[name] != b[name]]


def around(centre: str, scale: Scale, base: dict) -> list[str]:
    """One bullet for a centre: its outcome, the single factors that change it (with what they lead
    to), those that leave it, and those whose seeds split."""
    ref = scale.groups.get(CENTRES[centre], [])
    if not ref:
        return []
    ref_outcome = outcome(ref, scale)
    moved, kept, split = [], [], []
    for cell in FACTORIAL:
        runs = scale.groups.get(key(cell), [])
        if not runs or key(cell) == CENTRES[centre] or len(diff := changed(runs, ref)) != 1:
            continue
        o = outcome(runs, scale)
        if not ref_outcome.decided:
            kept.append(f"{diff[0]} (`{cell.name}`: {o})")
        elif not o.decided:
            split.append(f"{diff[0]} (`{cell.name}`: {o})")
        elif o.label != ref_outcome.label:
            moved.append(f"{diff[0]} (`{cell.name}`) → {o}; {knn_over_random(runs, base)}")
        else:
            kept.append(f"{diff[0]} (n = {o.n})")
    head = f"- **Around {centre}** (`{CENTRES[centre]}`: {ref_outcome}; {knn_over_random(ref, base)}). "
    if not ref_outcome.decided:
        return [head + f"The centre has no outcome ({ref_outcome.label}), so no factor is compared with it"
                + (f"; its one-factor neighbours read: {'; '.join(kept)}." if kept else ".")]
    change = "changes the outcome with: " + "; ".join(moved) if moved else "changes the outcome with no factor"
    return [head + f"Changing one factor {change}." + (f" Leaves it: {', '.join(kept)}." if kept else "")
            + (f" Undecided (seeds split or unread): {'; '.join(split)}." if split else "")]


def cell_means(values: list[tuple[str, float]]) -> list[float]:
    """One mean per cell of (cell, value) pairs: runs of one cell are not independent draws of one
    population across cells, so an interval over several cells takes the cells as its units."""
    cells: dict[str, list[float]] = {}
    for name, v in values:
        cells.setdefault(name, []).append(v)
    return [statistics.mean(v) for v in cells.values()]


def pooled(pairs: list[tuple[str, float]], unit: str = " points") -> str:
    """"mean [interval] (how read: sign)" of (cell, value) pairs: over cell means from two cells on
    (cell_means), over the runs of a single cell (then the runs are the units, as said)."""
    values = cell_means(pairs)
    n_cells = len(values)
    if n_cells < 2:
        values = [v for _, v in pairs]
    units = (f"mean over {n_cells} cells of their runs' means, {len(pairs)} runs" if n_cells > 1
             else f"one cell, its {len(pairs)} runs as the units" if pairs else "no run")
    return f"{mean_interval(values)}{unit} ({units}: {sign(values)})"


def after_head_collapse(scale: Scale) -> str:
    """The backbone's kNN from the head's collapse on (complete collapse (a) or z collapsed (b)), beside
    Q1 runs that did not collapse read over the same steps (from the collapsed runs' median collapse
    step): training goes on in both. Intervals over cell means (pooled)."""
    runs = [(key(c), r) for c in FACTORIAL for r in scale.groups.get(key(c), [])]
    after = [(name, read) for name, r in runs if (read := collapse_and_knn(r, scale)) is not None]
    if not after:
        return ("- **The backbone after the head:** unread — no Q1 run collapsed (complete collapse (a), or z "
                "at a calibrated level (b)) with two kNN readings from the collapse on.")
    start = statistics.median(t for _, (t, _) in after)
    others = [(name, d) for name, r in runs if collapsed(r, scale) is False
              and (d := knn_change_from(r, start)) is not None]
    missing = steps_missing([r for _, r in runs], scale)
    return (f"- **The backbone after the head:** from the head's collapse to the end, backbone kNN changes "
            f"{pooled([(name, d) for name, (_, d) in after])}; runs that did not collapse, from step "
            f"{start:g}: {pooled(others)}. The two groups' cells differ in their factors as well as in the "
            "collapse: an association, not a controlled comparison."
            + (f" {missing} collapsed run(s) have no collapse step (a last reading back past the threshold) and "
               "are left out." if missing else ""))


def crop_sentence(scale: Scale) -> str:
    """Per base cell: the outcome at each crop strength (crops from 20 % is its Q1 cell)."""
    parts = []
    for name, base_cell in AUG_BASES.items():
        read = [f"{label} {outcome(runs, scale).label} (n = {len(runs)})" for label, c in crop_arms(base_cell)
                if (runs := scale.groups.get(key(c), []))]
        if len(read) > 1:
            parts.append(f"`{name}`: " + ", ".join(read))
    if not parts:
        return "- **Crop strength:** only the default crops (from 20 % of the image) were run."
    return ("- **Crop strength** (crop0.9 / crop0.6: crops from 90 % / 60 % of the image; no-crop: flip and jitter "
            "only): " + "; ".join(parts) + ".")


def q1_answer(scale: Scale, base: dict) -> list[str]:
    """Around each centre, then the cells two factors from eq. (10), the backbone, the crop strengths."""
    text = around("eq10", scale, base) + around("SimSiam", scale, base)
    if not text:
        return []
    if eq10 := scale.groups.get(CENTRES["eq10"]):
        two = [(c, d) for c in FACTORIAL if (runs := scale.groups.get(key(c))) and len(d := changed(runs, eq10)) == 2]
        if two:
            text.append("- **Two factors changed from eq. (10):** " + "; ".join(
                f"`{c.name}` ({', '.join(d)}): {outcome(scale.groups[key(c)], scale)}" for c, d in two) + ".")
    text += [after_head_collapse(scale), crop_sentence(scale)]
    return [f"**Answer at {scale.label}** (this scale only; the table's last line says what the design cannot "
            "see; a cell with fewer than 3 seeds is provisional):", "", *text, ""]


def q2_readings(encoders: dict[str, dict[str, dict]]) -> tuple[list[str], dict[str, list[str]]]:
    """Per encoder a sentence: f(x̄_8) against f(x) and against the blur control, and the feature mean against
    f(x), each paired by seed on kNN (`encoders`: question_readouts.feature_choice's rows); and per comparison
    the verdict of each trained encoder (random init left out), e.g. "f(x) better"."""
    xbar, mean_f = f"f(x̄_{REFERENCE_K})", f"mean_k f(T_k x), K = {REFERENCE_K}"
    word = {"below 0": "{b} better", "above 0": "{a} better"}
    parts, tally = [], {}
    for encoder, rows in encoders.items():
        terms = [(xbar, "f(x)", paired_differences(rows, xbar, "knn")),
                 (xbar, "the blur control", paired_differences(rows, xbar, "knn", reference=BLUR)),
                 ("the feature mean", "f(x)", paired_differences(rows, mean_f, "knn"))]
        readings = [(a, b, d, word.get(sign(d), sign(d)).format(a=a, b=b)) for a, b, d in terms]
        parts.append(f"{encoder}: " + "; ".join(f"{a} − {b} {mean_interval(d)} ({w})" for a, b, d, w in readings))
        if encoder != "random init":
            for a, b, _, w in readings:
                tally.setdefault(f"{a} against {b}", []).append(w)
    return parts, tally


def tally_text(words: list[str]) -> str:
    """"f(x) better in 3": each verdict with how many encoders reached it."""
    return ", ".join(f"{w} in {words.count(w)}" for w in dict.fromkeys(words))


def q2_answer(label: str, encoders: dict[str, dict[str, dict]]) -> list[str]:
    """Each encoder's paired readings (q2_readings), then each comparison counted across the trained encoders."""
    parts, tally = q2_readings(encoders)
    trained = sum(e != "random init" for e in encoders)
    summary = "; ".join(f"{pair}: {tally_text(ws)}" for pair, ws in tally.items())
    return [f"**Answer at {label}** (kNN points, paired by seed, t 95 %): " + ". ".join(parts) + ".", "",
            f"Across the {trained} trained encoders: {summary}." if tally else "", ""]


def how_late(step: int, horizon: int | None) -> str:
    """" (step s of T: past half the run, close to the outcome it predicts)" for a late reading, else ""."""
    if horizon is None or 2 * step <= horizon:
        return ""
    return f" (step {step} of {horizon}: past half the run, close to the outcome it predicts)"


def q3_answer(label: str, flags: list[bool], steps: list[int], rule: str, curves: dict[str, dict[int, AUC]],
              first: dict[str, int | None], horizon: int | None = None) -> list[str]:
    """The best early predictor — the earliest to separate the outcomes for good, then the largest
    |AUC − ½|, the outcome read early (BASELINE) aside — its lead on the collapsed seeds' median collapse,
    how the speed argument fares, and its lead on the baseline (`flags`: whether each seed collapsed;
    `horizon`: the run's steps)."""
    head = f"**Answer at {label}.** {sum(flags)} of {len(flags)} seeds collapsed ({rule}). "
    if all(flags) or not any(flags):
        return [head + "The outcomes did not split, so no early predictor can be read.", ""]
    step, name = earliest(first, lambda n, s: abs(curves[n][s].value - 0.5))
    base = baseline_sentence(name, step, list(curves.get(BASELINE, {})), first.get(BASELINE), "separates the outcomes")
    if name is None:
        return [head + f"No early predictor separates the outcomes (exact Mann–Whitney p < {FAMILY_ALPHA:g} from some "
                "step on); neither speed nor any other early reading tells the seeds apart at this sample size."
                + base, ""]
    a = curves[name][step]
    lead = statistics.median(steps) - step if steps else None
    when = ("" if lead is None else f", {lead:g} steps before the median collapse" if lead > 0 else
            f", {'at' if lead == 0 else f'{-lead:g} steps after'} the median collapse (a reading of the collapse, "
            "not a warning)")
    return [head + f"The best early predictor is {name}: AUC {a.value:.2f} [{a.low:.2f}, {a.high:.2f}; "
            f"{FAMILY_TEXT}] from step {step}{how_late(step, horizon)}{when} ({direction(a)}). "
            + speed_sentence(curves, first, steps) + base, ""]


def earliest(firsts: dict[str, int | None], strength: Callable[[str, int], float]) -> tuple[int | None, str | None]:
    """(step, name) of the predictor that holds earliest, the outcome read early (BASELINE) aside: it is what
    the others are measured against, not a rival; ties go to the larger `strength` there."""
    found = sorted((s, -strength(n, s), n) for n, s in firsts.items() if s is not None and n != BASELINE)
    return (found[0][0], found[0][2]) if found else (None, None)


def direction(a: AUC) -> str:
    """Which way an AUC reads: the predictor higher or lower in the seeds that collapse."""
    return f"{'higher' if a.value > 0.5 else 'lower'} in the seeds that collapse"


def speed_sentence(curves: dict[str, dict[int, AUC]], first: dict[str, int | None], steps: list[int]) -> str:
    """How the seed's speed argument (§3 (b)) fares against the binary outcome."""
    speed = first.get(SPEED)
    if speed is None:
        return ("The seed's speed argument (§3 (b)): the predictor's relative speed does not separate the outcomes "
                f"(at no step does p < {FAMILY_ALPHA:g} hold from there to the end).")
    late = steps and speed >= statistics.median(steps)
    a = curves[SPEED][speed]
    return (f"The seed's speed argument (§3 (b)): the predictor's relative speed separates the outcomes from step "
            f"{speed} (AUC {a.value:.2f}, {direction(a)})"
            + (", no earlier than the median collapse: a reading of it, not a warning." if late else "."))


def baseline_sentence(best: str | None, step: int | None, base_steps: list[int], own: int | None, what: str) -> str:
    """The outcome read early (BASELINE) beside the best predictor: a warning is worth what it leads that by.
    The baseline is read at the held-out steps only, so its first step lies after its previous reading: the
    lead is a range."""
    text = " The outcome read early (p's centre-vector norm" + (", from the initial condition on" if own == 0 else "")
    if own is None:
        return text + f") {what} at no step held to the end."
    text += f") {what} from step {own}"
    prev = max((s for s in base_steps if s < own), default=None)
    if best is None or step is None:
        return text + "."
    if step >= own:
        return text + f": {best}, from step {step}, does not lead it."
    by = f"{prev - step + 1}–{own - step}" if prev is not None and prev >= step else f"at most {own - step}"
    return text + f" (not held from its reading at {prev})" * (prev is not None) + f": {best} leads it by {by} steps."


def rho_answer(rhos: dict[str, dict[int, tuple[float, float, float, int]]], firsts: dict[str, int | None],
               n: int, horizon: int | None = None) -> str:
    """The continuous reading: which early predictor, the outcome read early (BASELINE) aside, correlates
    with the final completeness (a) earliest (intervals at the family level: FAMILY_TEXT), and its lead on
    the baseline."""
    lead = (f"Against the final completeness (a) of the {n} seeds (a continuous outcome: no calibration, no split "
            "needed), ")
    step, name = earliest(firsts, lambda p, s: abs(rhos[p][s][0]))
    base = baseline_sentence(name, step, list(rhos.get(BASELINE, {})), firsts.get(BASELINE), "correlates")
    if name is None:
        return lead + "no early predictor's ρ excludes 0 from any step on." + (base if BASELINE in rhos else "")
    rho, lo, hi, read = rhos[name][step]
    speed = firsts.get(SPEED)
    return (lead + f"{name} correlates earliest: ρ {rho:+.2f} [{lo:+.2f}, {hi:+.2f}; {FAMILY_TEXT}] from step "
            f"{step}{how_late(step, horizon)} ({read} seeds read there); the predictor's relative speed "
            + (f"from step {speed} (ρ {rhos[SPEED][speed][0]:+.2f})." if speed is not None
               else "at no step from which it holds to the end" + farthest(rhos.get(SPEED)))
            + (base if BASELINE in rhos else ""))


def farthest(curve: dict[int, tuple[float, float, float, int]] | None) -> str:
    """"; its ρ is farthest from 0 at step s: ρ [lo, hi]" — where a predictor that never holds comes nearest."""
    finite = {k: v for k, v in (curve or {}).items() if math.isfinite(v[0])}
    if not finite:
        return "."
    s = max(finite, key=lambda k: abs(finite[k][0]))
    rho, lo, hi, _ = finite[s]
    return f"; its ρ is farthest from 0 at step {s}: {rho:+.2f} [{lo:+.2f}, {hi:+.2f}], not held from there on."
