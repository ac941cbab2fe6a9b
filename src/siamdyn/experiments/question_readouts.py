"""The readouts the open questions' tables, answers and figures share (docs/open_questions.md):
a cell's point in the Q1 factorial, P(complete collapse) with its interval, the backbone's kNN
change after the z head collapsed, and a Q3 seed's outcome."""
from __future__ import annotations

import os
from dataclasses import dataclass

from siamdyn.experiments.grids import CONTROLS, CROPS, FACTORIAL, Cell
from siamdyn.experiments.levels import (COMPLETE, completeness, head_state, nearer_collapsed, time_to_collapse,
                                        time_to_complete, z_shrank)
from siamdyn.experiments.readings import Run
from siamdyn.experiments.scales import Scale
from siamdyn.experiments.stats import clopper_pearson
from siamdyn.inputs import read_json

TARGETS = {"view_mean": "f(x̄)", "view_feature_mean": "mean_k f(T_k x)", "online": "another view", "ema": "EMA"}


# Q1-aug's base cells, each with the crop arms beside its default (crops from 20 %, the Q1 cell itself).
AUG_BASES = {c.name: c for c in (FACTORIAL[0], FACTORIAL[5], FACTORIAL[1], CONTROLS[0])}


def crop_arms(base: Cell) -> list[tuple[str, Cell]]:
    """(arm label, cell) of one base: the default crops, then grid Q1-aug's arms (grids.AUGMENTATION)."""
    return [("crops from 20 %", base)] + [(arm, Cell("Q1-aug", f"{base.name}-{arm}", base.preset)) for arm in CROPS]


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


def knn_change_from(run: Run, step: int) -> float | None:
    """Backbone kNN change (points) from the last kNN reading at or before `step` (else the first after
    it) to the end of the run; None without a later reading."""
    history = [(h["step"], h["knn_acc"]) for h in run.summary.get("knn", []) if h.get("knn_acc") is not None]
    before = [i for i, (s, _) in enumerate(history) if s <= step]
    start = before[-1] if before else next((i for i, (s, _) in enumerate(history) if s > step), None)
    return None if start is None or start >= len(history) - 1 else history[-1][1] - history[start][1]


STATES = ("collapsed", "partial", "healthy")


def z_state(run: Run, scale: Scale) -> str | None:
    """One run's z head at level (b): its state where the scale's controls calibrate z; where their bounds
    overlap, "nearer collapsed" or "nearer healthy" (position below or above ½: the weaker reading); None
    where nothing is read. A z that shrank toward 0 reads "shrank" (its rank may be noise, which reads
    high) unless its rank reads collapsed, or nearer the collapsed controls where uncalibrated: noise never
    reads low, and the positive controls that calibrate the collapsed bound shrink that way too."""
    cal = scale.calibration.get("z")
    state = head_state(run, "z", cal)
    near = nearer_collapsed(run, "z", cal) if cal is not None and not cal.separated else None
    reading = state or (None if near is None else "nearer collapsed" if near else "nearer healthy")
    if z_shrank(run):  # a low rank is read even so (noise never reads low); a high one may be noise
        return reading if reading in ("collapsed", "nearer collapsed") else "shrank"
    return reading


def _collapsed_by(run: Run, scale: Scale) -> tuple[bool, bool] | None:
    """(complete collapse (a), z collapsed at a calibrated level (b)); None without either reading."""
    complete = completeness(run)
    state = s if (s := z_state(run, scale)) in STATES else None
    if complete is None and state is None:
        return None
    return complete is not None and complete >= COMPLETE, state == "collapsed"


def collapsed(run: Run, scale: Scale) -> bool | None:
    """Complete collapse (a), or the z head collapsed at level (b) where the scale's controls calibrate
    it — either, because a run can collapse completely while z's rank reads high (eq. (10) without output
    BN at `q-w4`: completeness 0.97, RankMe(z) 60 on a z shrunk to a tenth). A z that shrank toward 0 counts
    at (b) only where its rank reads collapsed (z_state: noise reads high, never low). None without either
    reading."""
    by = _collapsed_by(run, scale)
    return None if by is None else any(by)


def collapse_step(run: Run, scale: Scale) -> int | None:
    """Where a collapsed run collapsed: the earlier of the readouts that say it did — the first reading from
    which p's centre norm stays complete (a), the first from which z stays collapsed (b); None for a run
    that did not collapse, and for one whose outcome (a window mean) says collapsed while no single reading
    stays past the threshold to the end (a last reading that dips back): its step is not known, and the
    readouts that need one count such runs apart (steps_missing)."""
    by = _collapsed_by(run, scale)
    if not by or not any(by):
        return None
    times = [time_to_complete(run) if by[0] else None,
             time_to_collapse(run, "z", scale.calibration.get("z")) if by[1] else None]
    return min((t for t in times if t is not None), default=None)


def collapse_and_knn(run: Run, scale: Scale) -> tuple[int, float] | None:
    """(collapse step, the backbone's kNN change from there to the end of the run): kNN is read every few
    epochs, so the collapse can come before the first reading (knn_change_from); None for a run that did
    not collapse or has no kNN reading after it."""
    t = collapse_step(run, scale)
    return None if t is None or (d := knn_change_from(run, t)) is None else (t, d)


def knn_after_head_collapse(run: Run, scale: Scale) -> float | None:
    """The backbone's kNN change from the head's collapse to the end of the run (collapse_and_knn)."""
    read = collapse_and_knn(run, scale)
    return None if read is None else read[1]


def steps_missing(runs: list[Run], scale: Scale) -> int:
    """How many of these runs collapsed without a known collapse step (collapse_step)."""
    return sum(bool(collapsed(r, scale)) and collapse_step(r, scale) is None for r in runs)


def outcomes(runs: list[Run], scale: Scale) -> tuple[list[Run], list[bool], list[int], str]:
    """The runs with an outcome (`collapsed`; a run without a reading is left out, not counted as
    healthy), whether each collapsed, the collapse steps of the collapsed runs that have one
    (steps_missing counts the others), and the rule."""
    read = [(r, c) for r in runs if (c := collapsed(r, scale)) is not None]
    steps = [t for r, c in read if c and (t := collapse_step(r, scale)) is not None]
    cal = scale.calibration.get("z")
    rule = ("complete collapse (a) or z collapsed (b)" if cal is not None and cal.separated
            else "complete collapse (a); z not calibrated")
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


@dataclass
class ZReading:
    """A cell's z heads at level (b): the runs that shrank toward 0 (rank not read; z_state); among the rest,
    the states where the scale's controls calibrate z, else, where their bounds overlap, how many sit
    nearer the collapsed controls than SimSiam (position below ½: the weaker reading)."""
    runs: int
    shrunk: int
    states: dict[str, int] | None = None
    nearer_collapsed: int | None = None
    read: int = 0

    def __str__(self) -> str:
        if self.states is not None:
            text = "/".join(str(self.states[s]) for s in STATES)
        elif self.nearer_collapsed is not None and self.read:
            text = f"bounds overlap: {self.nearer_collapsed}/{self.read} nearer the collapsed controls"
        else:
            text = "—"
        return text + (f"; {self.shrunk} shrank (rank not read)" if self.shrunk else "")


def z_reading(runs: list[Run], scale: Scale) -> ZReading:
    states = [z_state(r, scale) for r in runs]
    out, cal = ZReading(len(runs), states.count("shrank")), scale.calibration.get("z")
    if cal is not None and cal.separated:
        out.states = {s: states.count(s) for s in STATES}
        out.read = sum(out.states.values())
    elif cal is not None:
        out.nearer_collapsed = states.count("nearer collapsed")
        out.read = out.nearer_collapsed + states.count("nearer healthy")
    return out
