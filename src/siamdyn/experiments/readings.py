"""What a report reads from a run directory, and collapse judged against the healthy control.

Collapse is read on the held-out batch (probes/heldout.py), relative to the negative control
(`simsiam`, same seed where it has one) at the same step, because a projector ending in an
affine-free BatchNorm keeps z's std up whatever happens, and at a few epochs a collapsed head
can sit on a backbone whose kNN still looks like random init's:

    rank ratio(t) = min over {z, p} of RankMe(run, t) / RankMe(control, t)
    collapsed     rank ratio < 0.25, or RankMe(z or p) < 2 (near rank one)
    healthy       rank ratio ≥ 0.5 and RankMe(z and p) ≥ 2; in between: partial

A run's state is read over the measurement window (the last 20 % of its steps): collapsed or
healthy if every reading there is; its time to collapse is the first reading from which every
later one is collapsed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from siamdyn.runs import load_run_config, read_metrics

COLLAPSED_RATIO, HEALTHY_RATIO, RANK_FLOOR, WINDOW = 0.25, 0.5, 2.0, 0.2


@dataclass
class Run:
    """One finished run: its config, summary, held-out readings by step, probes and loss."""
    path: str
    cfg: Any
    summary: dict
    heldout: dict[int, dict] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return self.summary["steps"]

    def window_steps(self) -> list[int]:
        return [s for s in sorted(self.heldout) if s >= (1 - WINDOW) * self.steps]

    def final_loss(self, last: int = 10) -> float | None:
        tail = [v for _, v in self.losses[-last:]]
        return sum(tail) / len(tail) if tail else None


def load_run(path: str) -> Run | None:
    """The run in `path` if it finished (has summary.json), else None."""
    if not os.path.exists(os.path.join(path, "summary.json")):
        return None
    with open(os.path.join(path, "summary.json")) as f:
        summary = json.load(f)
    run = Run(path, load_run_config(path), summary)
    for r in read_metrics(path):
        if "heldout/z_erank" in r:
            run.heldout[r["step"]] = r
        elif "g1_norm" in r:
            run.probes.append(r)
        elif "loss" in r:
            run.losses.append((r["step"], r["loss"]))
    return run


def ranks(reading: dict) -> tuple[float, float]:
    return reading["heldout/z_erank"], reading["heldout/p_erank"]


def rank_ratio(run: Run, controls: list[Run], step: int) -> float | None:
    """min over z, p of RankMe(run)/RankMe(control) at `step`; the control of the same seed
    when there is one, else the mean of the controls that have a reading there."""
    if step not in run.heldout:
        return None
    same = [c for c in controls if c.cfg.seed == run.cfg.seed and step in c.heldout]
    refs = same or [c for c in controls if step in c.heldout]
    if not refs:
        return None
    ref_z = sum(ranks(c.heldout[step])[0] for c in refs) / len(refs)
    ref_p = sum(ranks(c.heldout[step])[1] for c in refs) / len(refs)
    z, p = ranks(run.heldout[step])
    return min(z / ref_z, p / ref_p)


def state_at(run: Run, controls: list[Run], step: int) -> str | None:
    ratio = rank_ratio(run, controls, step)
    if ratio is None:
        return None
    if ratio < COLLAPSED_RATIO or min(ranks(run.heldout[step])) < RANK_FLOOR:
        return "collapsed"
    return "healthy" if ratio >= HEALTHY_RATIO else "partial"


def window_state(run: Run, controls: list[Run]) -> str:
    """collapsed / healthy if every reading of the window is; partial otherwise."""
    states = {state_at(run, controls, s) for s in run.window_steps()} - {None}
    return states.pop() if len(states) == 1 else ("partial" if states else "unread")


def window_ratio(run: Run, controls: list[Run]) -> float | None:
    """Mean rank ratio over the measurement window."""
    vals = [r for s in run.window_steps() if (r := rank_ratio(run, controls, s)) is not None]
    return sum(vals) / len(vals) if vals else None


def time_to_collapse(run: Run, controls: list[Run]) -> int | None:
    """The first reading step from which every later reading is collapsed (None: never)."""
    steps = sorted(run.heldout)
    first = None
    for s in steps:
        if state_at(run, controls, s) == "collapsed":
            first = s if first is None else first
        else:
            first = None
    return first


def window_mean(run: Run, key: str) -> float | None:
    vals = [run.heldout[s][key] for s in run.window_steps() if key in run.heldout[s]]
    return sum(vals) / len(vals) if vals else None
