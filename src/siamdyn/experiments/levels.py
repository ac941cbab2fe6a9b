"""The three readouts of findings v3: each claim names the level it is about (docs/protocol.md).

(a) complete collapse, SimSiam's sense (every output the same vector *and* the loss at its
    minimum): completeness = min(‖E[p/‖p‖]‖, the loss as a cosine); complete at ≥ 0.9.
(b) dimensional collapse, per head, z and p apart (no min over heads): log RankMe placed
    between this scale's own controls, position 0 = the positive controls' mean, 1 = the
    negative control's. Collapsed below the positive controls' 95 % prediction interval,
    healthy above the negative control's; between the two: partial.
(c) the representation: backbone RankMe, kNN and a linear probe, each minus a random-init
    encoder of the same width on the same bank.

Every number is a window mean (the last 20 % of the run's held-out readings, readings.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from siamdyn.experiments.readings import Run, window_mean
from siamdyn.experiments.stats import first_from, prediction_interval

COMPLETE = 0.9
HEADS = ("z", "p")


def loss_as_cosine(run: Run) -> float | None:
    """The final loss as the mean cosine between prediction and target (1 at the minimum);
    None for a loss that is not a function of that cosine (InfoNCE)."""
    loss, cfg = run.final_loss(), run.cfg
    if loss is None or cfg.loss not in ("cosine", "mse"):
        return None
    per_pair = loss / (2 if cfg.symmetrize == "sum" else 1)
    return -per_pair if cfg.loss == "cosine" else 1 - per_pair / 2


def loss_closeness(run: Run) -> float | None:
    """How near its minimum the final loss is, in [0, 1]: the loss as a cosine where it is one;
    for eq. (10)'s unnormalised squared distance (minimum 0, no natural unit), 1 − final / first
    logged loss."""
    if run.cfg.loss != "l2":
        return loss_as_cosine(run)
    first = [v for _, v in run.losses[:3]]
    final = run.final_loss()
    if final is None or not first or sum(first) <= 0:
        return None
    return min(1.0, max(0.0, 1 - final / (sum(first) / len(first))))


def completeness(run: Run) -> float | None:
    """Readout (a): min(centre-vector norm of p, the loss toward its minimum); → 1 at complete collapse."""
    centre, cos = window_mean(run, "heldout/p_center_norm"), loss_closeness(run)
    return None if centre is None or cos is None else min(centre, cos)


def log_rank(run: Run, head: str, step: int | None = None) -> float | None:
    """log RankMe of a head on the held-out batch: the window mean, or at one reading."""
    key = f"heldout/{head}_erank"
    if step is None:
        v = window_mean(run, key)
        return None if v is None else math.log(v)
    return math.log(run.heldout[step][key]) if step in run.heldout else None


@dataclass
class HeadScale:
    """One head's calibration at one scale, from that scale's controls (log RankMe units)."""
    positive: float  # mean over the positive controls' runs
    negative: float  # mean over the negative control's runs
    collapsed_below: float  # position: upper 95 % prediction bound of a positive control
    healthy_above: float  # position: lower 95 % prediction bound of a negative control

    @property
    def separated(self) -> bool:
        return (math.isfinite(self.collapsed_below) and math.isfinite(self.healthy_above)
                and self.collapsed_below < self.healthy_above)

    def position(self, log_value: float) -> float:
        return (log_value - self.positive) / (self.negative - self.positive)

    def state(self, position: float) -> str:
        if position < self.collapsed_below:
            return "collapsed"
        return "healthy" if position >= self.healthy_above else "partial"


def calibrate(negative: list[Run], positive: list[Run]) -> dict[str, HeadScale | None]:
    """Per head, the scale's calibration; None where the controls are missing or coincide."""
    out: dict[str, HeadScale | None] = {}
    for head in HEADS:
        neg = [v for r in negative if (v := log_rank(r, head)) is not None]
        pos = [v for r in positive if (v := log_rank(r, head)) is not None]
        if len(neg) < 2 or len(pos) < 2 or sum(neg) / len(neg) <= sum(pos) / len(pos):
            out[head] = None
            continue
        mu_n, mu_p = sum(neg) / len(neg), sum(pos) / len(pos)
        span = mu_n - mu_p
        out[head] = HeadScale(mu_p, mu_n, (prediction_interval(pos)[1] - mu_p) / span,
                              (prediction_interval(neg)[0] - mu_p) / span)
    return out


def position(run: Run, head: str, cal: HeadScale | None, step: int | None = None) -> float | None:
    """Readout (b): where the head's log RankMe sits between the scale's controls."""
    v = log_rank(run, head, step)
    return None if v is None or cal is None else cal.position(v)


# A z head whose mean norm ends below this fraction of its random-init reading has shrunk toward 0 (an
# L2 loss without an output BN can do that): its rank then reads the noise that is left, so level (b) is
# not read for it (docs/open_questions.md, "Readouts").
SHRUNK = 0.25


def z_shrank(run: Run) -> bool:
    """The held-out mean ‖z‖ at the end is below SHRUNK × its first reading."""
    norms = [run.heldout[s]["heldout/z_mean_norm"] for s in sorted(run.heldout) if "heldout/z_mean_norm" in
             run.heldout[s]]
    return len(norms) >= 2 and norms[0] > 0 and norms[-1] < SHRUNK * norms[0]


def head_state(run: Run, head: str, cal: HeadScale | None) -> str | None:
    """Collapsed / partial / healthy at level (b); None where the controls do not calibrate the head
    (missing, or their prediction bounds overlap: a state read there would depend on which bound wins)."""
    pos = position(run, head, cal) if cal is not None and cal.separated else None
    return None if pos is None else cal.state(pos)


def nearer_collapsed(run: Run, head: str, cal: HeadScale | None) -> bool | None:
    """Whether the head's position is nearer the collapsed controls than the healthy one (below ½):
    the weaker reading left where the controls' bounds overlap; None where no position is read."""
    pos = position(run, head, cal)
    return None if pos is None else pos < 0.5


def time_to_collapse(run: Run, head: str, cal: HeadScale | None) -> int | None:
    """The first held-out reading from which every later one of this head is collapsed; None where
    the controls do not calibrate the head."""
    if cal is None or not cal.separated:
        return None
    return first_from(list(run.heldout), lambda s: (pos := position(run, head, cal, s)) is not None
                      and pos < cal.collapsed_below)


def time_to_complete(run: Run) -> int | None:
    """The first held-out reading from which p's centre-vector norm stays at or above COMPLETE (the
    per-reading half of readout (a); the loss half is read once, at the end)."""
    return first_from(list(run.heldout), lambda s: run.heldout[s].get("heldout/p_center_norm", 0.0) >= COMPLETE)


def representation(run: Run, random_init: dict) -> dict[str, float | None]:
    """Readout (c): backbone RankMe, and kNN / linear probe in points above the random-init
    encoder of the same width (`random_init`: its baseline.json)."""
    knn = run.summary.get("final_knn_acc")
    linear = run.eval.get("linear_test_acc") if run.eval else None
    ref_knn = random_init.get("random_init_kaiming_weighted_knn")
    ref_lin = random_init.get("random_init_kaiming_linear")
    return {"feature_rank": window_mean(run, "heldout/feature_erank"),
            "knn_over_random": None if knn is None or ref_knn is None else knn - ref_knn,
            "linear_over_random": None if linear is None or ref_lin is None else linear - ref_lin}
