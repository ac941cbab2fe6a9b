"""What a report reads from a run directory: its config, summary, held-out readings by step,
probes, losses and (where the runner probed the final backbone) eval.json.

A run's numbers are read over the measurement window, the last 20 % of its steps; levels.py
turns them into the three readouts of findings v3.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from siamdyn.errors import SiamdynError, warn
from siamdyn.inputs import read_json
from siamdyn.runs import load_run_config, read_metrics

WINDOW = 0.2


@dataclass
class Run:
    """One finished run: its config, summary, held-out readings by step, probes and loss."""
    path: str
    cfg: Any
    summary: dict
    heldout: dict[int, dict] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.summary["steps"]

    def window_steps(self) -> list[int]:
        return [s for s in sorted(self.heldout) if s >= (1 - WINDOW) * self.steps]

    def final_loss(self, last: int = 10) -> float | None:
        tail = [v for _, v in self.losses[-last:]]
        return sum(tail) / len(tail) if tail else None


def load_run(path: str) -> Run | None:
    """The run in `path` if it finished (has summary.json), else None. A run whose files cannot be
    read (a truncated summary.json, a damaged config.yaml) is named on stderr and left out, as is
    one with damaged lines in metrics.jsonl beyond a half-written last one (a crash's)."""
    if not os.path.exists(os.path.join(path, "summary.json")):
        return None
    skipped: list[int] = []
    try:
        run = Run(path, load_run_config(path), read_json(os.path.join(path, "summary.json")))
        if os.path.exists(os.path.join(path, "eval.json")):
            run.eval = read_json(os.path.join(path, "eval.json"))
        records = read_metrics(path, skipped)
    except (OSError, SiamdynError) as e:  # read_json and load_run_config say what is wrong in one line
        warn(f"{path} is left out of the report: {str(e).splitlines()[0]} — restore its files or train it again")
        return None
    if [n for n in skipped if n != len(records) + len(skipped)] or not records:
        damage = f"{len(skipped)} unreadable line(s) beside {len(records)} readable" if records else "no readable line"
        warn(f"{path} is left out of the report: its metrics.jsonl has {damage} — restore it or train the run again")
        return None
    for r in records:
        if "heldout/z_erank" in r:
            run.heldout[r["step"]] = r
        elif "g1_norm" in r:
            run.probes.append(r)
        elif "loss" in r:
            run.losses.append((r["step"], r["loss"]))
    return run


def window_mean(run: Run, key: str) -> float | None:
    vals = [run.heldout[s][key] for s in run.window_steps() if key in run.heldout[s]]
    return sum(vals) / len(vals) if vals else None
