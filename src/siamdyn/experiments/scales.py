"""A findings folder holds one experiment folder per scale × optimiser (w4/, standard/, sgd/,
gpu-w64/ ...), each with its own controls. This module loads them and gives every claim its
verdict per scale, at the claim's level (levels.py), from that scale's calibration alone."""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

from siamdyn.inputs import open_input
from siamdyn.errors import SiamdynError
from siamdyn.experiments.claims import CLAIMS, Claim
from siamdyn.experiments.grids import CONTROLS, EXTRA_GRIDS, GRIDS, NEGATIVE, POSITIVE, SAME_CELL, grid_cells
from siamdyn.experiments.levels import (COMPLETE, HEADS, HeadScale, calibrate, completeness, head_state, log_rank,
                                       position)
from siamdyn.experiments.readings import Run, load_run
from siamdyn.experiments.verdicts import (Verdict, plateau_verdict, proportion_verdict, threshold_verdict,
                                          trend_verdict)
from siamdyn.runs import atomic_write_text

BIMODAL = ("H2c",)  # claims whose cell splits across seeds: read as P(collapse)


@dataclass
class Scale:
    """One experiment folder: its run groups ("grid/cell" → runs) and calibration per head."""
    path: str
    meta: dict
    groups: dict[str, list[Run]]
    calibration: dict[str, HeadScale | None] = field(default_factory=dict)

    @property
    def controls(self) -> list[Run]:
        return self.groups.get(f"controls/{NEGATIVE}", [])

    @property
    def setting(self) -> tuple[int, str, int] | None:
        """(width, optimiser, steps) of its negative control's runs, else of any run; None when it has none."""
        runs = self.controls or [r for rs in self.groups.values() for r in rs]
        if not runs:
            return None
        cfg = runs[0].cfg
        return cfg.backbone_width, dict(adamw="AdamW", sgd="SGD", lars="LARS")[cfg.optimizer], runs[0].steps

    @property
    def label(self) -> str:
        """"w8 AdamW 600 steps" (its setting), or the folder's name when it has no run."""
        if (setting := self.setting) is None:
            return os.path.basename(self.path)
        width, optimiser, steps = setting
        return f"w{width} {optimiser} {steps} steps"

    def runs(self, cells: tuple[str, ...] | list[str]) -> list[Run]:
        """The finished runs of these run groups (a claim's cells), each with its SAME_CELL twin's (the same
        configuration run by another grid) for the seeds it has not run itself: no seed counted twice."""
        out = []
        for c in cells:
            own = self.groups.get(c, [])
            seeds = {r.cfg.seed for r in own}
            out += own + [r for r in self.groups.get(SAME_CELL.get(c, ""), []) if r.cfg.seed not in seeds]
        return out


def load_groups(out: str) -> dict[str, list[Run]]:
    """"grid/cell" → its finished runs, for every cell of every grid."""
    groups: dict[str, list[Run]] = {}
    for grid in GRIDS + EXTRA_GRIDS:
        for cell in grid_cells(grid):
            key = f"{cell.grid}/{cell.name}"
            if key not in groups:
                paths = sorted(glob.glob(os.path.join(out, cell.grid, cell.name, "seed*")))
                groups[key] = [r for r in map(load_run, paths) if r is not None]
    return groups


def load_scale(path: str) -> Scale:
    with open_input(os.path.join(path, "experiment.json")) as f:
        meta = json.load(f)
    groups = load_groups(path)
    scale = Scale(path, meta, groups)
    positive = [r for name in POSITIVE for r in groups.get(f"controls/{name}", [])]
    scale.calibration = calibrate(scale.controls, positive)
    return scale


def load_scales(out: str) -> list[Scale]:
    """OUT itself when it is one experiment folder, else every experiment folder under it,
    ordered by optimiser, then width."""
    if os.path.exists(os.path.join(out, "experiment.json")):
        return [load_scale(out)]
    paths = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(out, "*", "experiment.json")))
    if not paths:
        raise SiamdynError(f"{out} holds no experiment.json, nor folders with one; run "
                           f"`siamdyn experiment NAME --out {out}/<scale>` first")
    scales = [load_scale(p) for p in paths]

    def order(s: Scale) -> tuple:
        runs = s.controls or [r for rs in s.groups.values() for r in rs] or [None]
        cfg = runs[0].cfg if runs[0] is not None else None
        return (cfg.optimizer != "adamw", cfg.backbone_width, s.path) if cfg else (True, 0, s.path)
    return sorted(scales, key=order)


# Random-init encoders drawn per scale: one draw's kNN is off by a few points (SD over 5 draws 5.3 at w4, 3.4 at
# w8 on the findings' bank; docs/protocol.md).
INIT_SEEDS = 5


def scale_baseline(scale: Scale) -> dict:
    """Raw-pixel and random-init kNN / linear probe on this scale's bank and width (cached), the
    random-init readings a mean over INIT_SEEDS draws."""
    path = os.path.join(scale.path, "baseline.json")
    if os.path.exists(path):
        with open_input(path) as f:
            cached = json.load(f)
        if len(cached.get("random_init_kaiming_weighted_knn_by_seed", ())) == INIT_SEEDS:
            return cached
    if not scale.controls:
        return {}
    from siamdyn.baseline import run_baseline
    from siamdyn.experiments.grids import PROBE_EPOCHS
    cfg = scale.controls[0].cfg
    if cfg.device == "cuda":  # a GPU scale read on a machine without one: auto falls back to the CPU
        cfg = cfg.replace(device="auto")
    result = run_baseline(cfg.replace(seed=0), linear_epochs=PROBE_EPOCHS.get(scale.meta.get("budget", ""), 0) or 20,
                          init_seeds=INIT_SEEDS)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def has_controls(scale: Scale) -> bool:
    """Whether all three controls ran here, which every collapse reading is placed between (levels a, b): the
    claims' verdicts and Q1's readings need them. A folder of grid Q2 alone (`q-w8`) ran only SimSiam, the
    control Q2 reads features from, so its runs are read for features only."""
    return all(scale.groups.get(f"controls/{c.name}") for c in CONTROLS)


def controls_problems(scale: Scale) -> list[str]:
    """What keeps this scale's controls from calibrating: missing runs, or heads where the
    positive and negative controls' prediction intervals overlap."""
    counts = {c.name: len(scale.groups.get(f"controls/{c.name}", [])) for c in CONTROLS}
    # none at all: e.g. a folder of grid Q2 alone, which trains only the control it analyses (grids.grid_cells)
    problems = [f"`{name}` " + ("not run here" if not n else "has fewer than 2 finished runs")
                for name, n in counts.items() if n < 2]
    for head in HEADS:
        cal = scale.calibration.get(head)
        if cal is not None and not cal.separated:
            problems.append(f"RankMe({head}): the controls' 95 % prediction intervals overlap")
    return problems


def level_values(scale: Scale, claim: Claim, head: str | None) -> list[float]:
    runs = scale.runs(claim.cells)
    if claim.level == "a":
        return [v for r in runs if (v := completeness(r)) is not None]
    return [v for r in runs if (v := position(r, head, scale.calibration.get(head))) is not None]


def head_verdict(scale: Scale, claim: Claim, head: str) -> Verdict:
    """A level-(b) claim's verdict on one head."""
    cal = scale.calibration.get(head)
    if cal is None or not cal.separated:
        return Verdict("protocol failed", f"the controls do not calibrate RankMe({head}) at this scale")
    if claim.predicted == "plateau":
        first, last = ([v for r in scale.groups.get(c, []) if (v := log_rank(r, head)) is not None]
                       for c in claim.cells)
        return plateau_verdict(first, last, f"log RankMe({head})")
    if claim.ladder:
        rungs = {x: [v for r in scale.groups.get(c, []) if (v := position(r, head, cal)) is not None]
                 for x, c in zip(claim.rungs, claim.cells)}
        return trend_verdict(rungs, +1 if claim.predicted == "+" else -1, f"log10 value, position({head})")
    if claim.key in BIMODAL:
        states = [head_state(r, head, cal) for r in scale.runs(claim.cells)]
        return proportion_verdict(states.count("collapsed"), len(states), claim.predicted)
    return threshold_verdict(level_values(scale, claim, head), cal.collapsed_below,
                             claim.predicted == "collapsed", f"position({head})")


def claim_verdicts(scale: Scale, claim: Claim) -> dict[str, Verdict]:
    """{"a": v} for a level-(a) claim, {"z": v, "p": v} for a level-(b) one."""
    if not scale.runs(claim.cells):
        return {"-": Verdict("not run", "no finished run at this scale")}
    if claim.level == "a":
        return {"a": threshold_verdict(level_values(scale, claim, None), COMPLETE, claim.predicted != "collapsed",
                                       "completeness")}
    return {head: head_verdict(scale, claim, head) for head in HEADS}


def all_verdicts(scales: list[Scale]) -> dict[str, list[dict[str, Verdict]]]:
    """claim key → its verdicts at each scale, in the order of `scales`."""
    return {c.key: [claim_verdicts(s, c) for s in scales] for c in CLAIMS}
