"""The open questions across scales (the head of "The seed's open questions" in findings.md): each
question's per-scale answer side by side, and where it holds at every scale that read it or moves with
width, horizon or optimiser, named as the findings' verdict matrix names it (report_tables.dependence)."""
from __future__ import annotations

from siamdyn.experiments.grids import CONTROLS, FACTORIAL, SPEED_BASIN
from siamdyn.experiments.question_readouts import feature_choice, key
from siamdyn.experiments.report_answers import outcome, q2_readings, tally_text
from siamdyn.experiments.report_tables import dependence
from siamdyn.experiments.scales import Scale


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


def q1_across(scales: list[Scale]) -> list[str]:
    """Each Q1 cell's outcome (what most of its seeds read) at every scale that ran it; cells run at one
    scale only are counted, not shown."""
    read = [s for s in scales if any(s.groups.get(key(c)) for c in FACTORIAL)]
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
        if all(o.decided for o in found.values()):
            verdicts.append((cell.name, dependence([(s, found[s.path].label) for s in read if s.path in found])))
        else:
            undecided.append(cell.name)
    lines = ["**Q1** (each cell's outcome: the reading most of its seeds reached, with their count):", ""]
    return lines + _table("cell", read, rows) + [
        _holds_or_moves("Outcome", verdicts, undecided, "its seeds split or were unread at a scale")
        + (f" {single} cell(s) ran at one scale only." if single else ""), ""]


def q2_across(scales: list[Scale]) -> list[str]:
    """Each Q2 comparison's verdicts over the trained encoders at every scale whose Q2 analysis ran; a
    comparison "holds" at a scale where every trained encoder reads alike."""
    read = [(s, tally) for s in scales if (fc := feature_choice(s)) and fc[1] and (tally := q2_readings(fc[1])[1])]
    if len(read) < 2:
        return []
    pairs = list(dict.fromkeys(p for _, tally in read for p in tally))
    rows = [(pair, [tally_text(t[pair]) if pair in t else "—" for _, t in read]) for pair in pairs]
    verdicts, undecided = [], []
    for pair in pairs:
        unanimous = [(s, words[0]) for s, t in read if (words := t.get(pair)) and len(set(words)) == 1]
        if len(unanimous) == sum(pair in t for _, t in read):
            verdicts.append((pair, dependence(unanimous)))
        else:  # with every encoder × scale reading pooled, so a reader sees whether any went the other way
            undecided.append(f"{pair} (pooled: {tally_text([w for _, t in read for w in t.get(pair, [])])})")
    lines = ["**Q2** (per comparison, kNN paired by seed: how many trained encoders read each way):", ""]
    return lines + _table("comparison", [s for s, _ in read], rows) + [
        _holds_or_moves("Verdict", verdicts, undecided, "the trained encoders read it differently at a scale"), ""]


def across_lines(scales: list[Scale]) -> list[str]:
    """The "Across scales" block: Q1 and Q2 side by side where two or more scales read them, and which
    scales read each question (Q3 included); [] when no question ran at two scales."""
    runs_of = {"Q1": lambda s: any(s.groups.get(key(c)) for c in FACTORIAL),
               "Q2": lambda s: bool((fc := feature_choice(s)) and fc[1]),
               "Q3": lambda s: bool(s.groups.get(key(SPEED_BASIN[0])))}
    where = {q: [s.label for s in scales if ran(s)] for q, ran in runs_of.items()}
    body = q1_across(scales) + q2_across(scales)
    if not body:
        return []
    read_at = "; ".join(f"{q} at {', '.join(labels)}" for q, labels in where.items() if labels)
    return ["### Across scales", "", f"Read at: {read_at}. A question read at one scale has its answer there "
            "only. Q1 counts every scale where one of its cells ran, those other grids share too (`xbar-K4` is H6's, "
            "`no-predictor` H2's); a scale without grid Q1 has no Q1 section below, and its runs' numbers are in "
            "its own run table.", "", *body]
