"""The open questions across scales (the head of "The seed's open questions" in findings.md): each
question's per-scale answer side by side, and where it holds at every scale that read it or moves with
width, horizon or optimiser, named as the findings' verdict matrix names it (report_tables.dependence)."""
from __future__ import annotations

from siamdyn.experiments.grids import CONTROLS, FACTORIAL, SPEED_BASIN
from siamdyn.experiments.question_readouts import feature_choice, key
from siamdyn.experiments.report_answers import Outcome, outcome, q2_readings, tally_text
from siamdyn.experiments.report_tables import dependence
from siamdyn.experiments.scales import Scale, has_controls


def _table(head: str, scales: list[Scale], rows: list[tuple[str, list[str]]]) -> list[str]:
    return [f"| {head} | " + " | ".join(s.label for s in scales) + " |", "|---" * (len(scales) + 1) + "|",
            *(f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows), ""]


def _holds_or_moves(what: str, verdicts: list[tuple[str, str | None]], undecided: list[str], why: str) -> str:
    """`verdicts`: (name, dependence) per compared row; `undecided`: rows not compared, for reason `why`."""
    same = [name for name, d in verdicts if d is None]
    moved = [f"{name}: {d}" for name, d in verdicts if d is not None]
    return (f"{what}: the same at every scale that read it: {', '.join(same) or 'none'}"
            + (f"; moves: {'; '.join(moved)}" if moved else "")
            + (f"; not compared ({why}): {', '.join(undecided)}" if undecided else "") + ".")


def reads_q1(scale: Scale) -> bool:
    """Q1 reads a scale where one of its cells ran (those other grids share too) and all three controls
    ran, which place its collapse readings (a folder of grid Q2 alone trains Q1's cells for features only)."""
    return has_controls(scale) and any(scale.groups.get(key(c)) for c in FACTORIAL)


def reads_q2(scale: Scale) -> bool:
    """Q2 reads a scale whose Q2 analysis ran with at least one encoder."""
    return bool((fc := feature_choice(scale)) and fc[1])


def comparable(o: Outcome) -> bool:
    """An outcome compared across scales: decided (not split or unread) and read against calibrated controls
    (not "nearer" one control where their bounds overlap: that weaker reading is not a level-(b) state)."""
    return o.decided and "uncalibrated" not in o.label


def q1_across(scales: list[Scale]) -> list[str]:
    """Each Q1 cell's outcome (what most of its seeds read) at every scale that ran it; cells run at one
    scale only are counted, not shown."""
    read = [s for s in scales if reads_q1(s)]
    if len(read) < 2:
        return []
    rows, verdicts, undecided, single = [], [], [], 0
    for cell in [CONTROLS[0], *FACTORIAL]:
        found = {s.path: outcome(runs, s) for s in read if (runs := s.groups.get(key(cell)))}
        if len(found) < 2:
            single += bool(found)
            continue
        cells = [("—" if (o := found.get(s.path)) is None else
                  f"{o.label} {o.counts[o.label]}/{o.read}" if o.decided else f"{o.label} ({o.detail})") for s in read]
        rows.append((f"`{cell.name}`", cells))
        if all(comparable(o) for o in found.values()):
            verdicts.append((cell.name, dependence([(s, found[s.path].label) for s in read if s.path in found])))
        else:
            undecided.append(cell.name)
    lines = ["**Q1** (each cell's outcome: the reading most of its seeds reached, with their count):", ""]
    return lines + _table("cell", read, rows) + [
        _holds_or_moves("Outcome", verdicts, undecided, "at a scale its seeds split, were unread or sat between "
                        "uncalibrated controls") + (f" {single} cell(s) ran at one scale only." if single else ""), ""]


def q2_across(scales: list[Scale]) -> list[str]:
    """Each Q2 comparison's verdicts over the trained encoders at every scale whose Q2 analysis ran; a
    comparison is compared across scales where, at each, every trained encoder reads the same way and that
    way is decided ("… better"; "not separated from 0" or unread is not a verdict to hold or move)."""
    read = [(s, tally) for s in scales if reads_q2(s) and (tally := q2_readings(feature_choice(s)[1])[1])]
    if len(read) < 2:
        return []
    pairs = list(dict.fromkeys(p for _, tally in read for p in tally))
    rows = [(pair, [tally_text(t[pair]) if pair in t else "—" for _, t in read]) for pair in pairs]
    verdicts, undecided = [], []
    for pair in pairs:
        decided = [(s, words[0]) for s, t in read
                   if (words := t.get(pair)) and len(set(words)) == 1 and words[0].endswith(" better")]
        if len(decided) == sum(pair in t for _, t in read):
            verdicts.append((pair, dependence(decided)))
        else:  # with every encoder × scale reading pooled, so a reader sees whether any went the other way
            undecided.append(f"{pair} (pooled: {tally_text([w for _, t in read for w in t.get(pair, [])])})")
    lines = ["**Q2** (per comparison, kNN paired by seed: how many trained encoders read each way):", ""]
    return lines + _table("comparison", [s for s, _ in read], rows) + [
        _holds_or_moves("Verdict", verdicts, undecided, "at a scale the trained encoders read it differently, or "
                        "not separated from 0"), ""]


def across_lines(scales: list[Scale]) -> list[str]:
    """The "Across scales" block: Q1 and Q2 side by side where two or more scales read them, and which
    scales read each question (Q3 included); [] when no question is read at two scales."""
    reads = {"Q1": reads_q1, "Q2": reads_q2, "Q3": lambda s: bool(s.groups.get(key(SPEED_BASIN[0])))}
    where = {q: [s.label for s in scales if ran(s)] for q, ran in reads.items()}
    body = q1_across(scales) + q2_across(scales)
    if not body:
        return []
    read_at = "; ".join(f"{q} at {', '.join(labels)}" for q, labels in where.items() if labels)
    return ["### Across scales", "", f"Read at: {read_at}. A question read at one scale has its answer there "
            "only. Q1 reads every scale where one of its cells ran beside all three controls, cells other grids "
            "share included (`xbar-K4` is H6's, `no-predictor` H2's); a scale without grid Q1 has no Q1 section "
            "below, and its runs' numbers are in its own run table.", "", *body]
