"""The collapse detector: rules read against the run's own start, and the absolute rules where they hold.

Which rule holds for which head (docs/api.md, "Which rule holds for which head"):

- spread (any head): s = 1 − cos_images, the mean cosine between different images taken from 1, is the
  total variance of z/‖z‖ over the batch. It goes to 0 when every image gets one output, whatever the
  head adds to all of them. Judged against its own start: collapse when s < (max of its first
  `BASELINE_READINGS` readings) / `SPREAD_DROP`.
- RankMe (any head): of z − its batch mean when that is given (`z_erank_centred`), so a shared offset
  is no dimension. Collapse when it falls below `rank_floor` (2: the rows lie on a line) or below its
  early maximum / `RANK_DROP`.
- std (heads that centre z, e.g. an affine-free BatchNorm at the end): min(std of z/‖z‖, std of p/‖p‖)
  < fraction/√d presumes z starts spread like isotropic vectors (≈ 1/√d). A head whose outputs share an
  offset from the start (a LayerNorm head: cos_images 0.6–0.8 before any update) starts far below that
  and moves the offset freely, so the rule holds only when the first reading's cos_images is below
  `CENTRED_COS`; readings without cos_images (one view) keep it, as before.

Every rule's streak counts towards `patience`; a trend over the last `WARN_WINDOW` readings that
crosses a threshold within `warn_horizon` steps raises a warning first (`warning_step`, `warning`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

COLLAPSE_FRACTION = 0.25  # a run counts as collapsed below 0.25/√d (docs/design.md §9)
HEALTHY_FRACTION = 0.8
RANK_FLOOR = 2.0  # RankMe(z) below this = (near) rank-one embeddings (docs/design.md §9)
# Calibrated on the logged runs of docs/api.md's table: healthy BatchNorm SimSiam falls to 1/8 of its early
# RankMe (95 → 12), a healthy LayerNorm head's spread to 1/9 of its start; collapses fall to 1/80 and 1/600.
RANK_DROP = 30.0
SPREAD_DROP = 25.0
CENTRED_COS = 0.2
# Once a rule is below, the streak lasts until every rule is back above RELEASE x its threshold: a collapsing
# run's readings scatter around a threshold, and one reading just above it restarted the count (the BatchNorm
# no-stop-gradient run of tests/test_head_agnostic.py was dated 60 steps after its cos_images crossed 0.5).
RELEASE = 1.25
BASELINE_READINGS = 5  # the run's start: the first readings of each quantity
WARN_WINDOW = 5  # readings the trend is fitted over
WARN_HORIZON = 100  # steps ahead a trend may cross its threshold and warn


def collapse_threshold(dim: int, fraction: float = COLLAPSE_FRACTION) -> float:
    return fraction / math.sqrt(dim)


@dataclass
class Gauge:
    """One rule's reading: collapse when `value` < `threshold`; `text` says why, for the reason."""
    name: str
    value: float
    threshold: float
    text: str


class CollapseDetector:
    """Flags collapse when any rule valid for the run (module docstring) has held for `patience`
    consecutive steps (counted in steps, whatever log_every is); `step` is the first step of that
    streak, `reason` the rule that started it. The patience ignores transient dips, such as BYOL's
    early p-std dip that recovers (docs/design.md §9). `warning_step`/`warning`: the first step a
    rule's trend predicted a crossing within `warn_horizon` steps (or a rule went below), for the record.
    `rank_drop`, `spread_drop` or `warn_horizon` of 0 turn that rule off; `rank_floor` 0 the floor.
    """

    def __init__(self, dim: int, fraction: float = COLLAPSE_FRACTION, rank_floor: float = RANK_FLOOR,
                 patience: int = 1, rank_drop: float = RANK_DROP, spread_drop: float = SPREAD_DROP,
                 warn_horizon: int = WARN_HORIZON):
        self.threshold = collapse_threshold(dim, fraction)
        self.rank_floor, self.rank_drop, self.spread_drop = rank_floor, rank_drop, spread_drop
        self.warn_horizon = warn_horizon
        self.patience = max(1, patience)
        self.step: int | None = None
        self.reason: str | None = None
        self._streak: tuple[int, str] | None = None  # (first step, reason) of the current run below
        self.last_rank: float | None = None  # the latest RankMe(z) reading
        self.last_rank_centred: float | None = None  # the latest RankMe(z − mean) reading
        self.cos0: float | None = None  # the first reading's cos_images: does the head centre z?
        self.early: dict[str, list[float]] = {}  # quantity → [max, readings] over the run's start
        self.history: dict[str, list[list[float]]] = {}  # rule → last WARN_WINDOW [step, value]
        self.warning_step: int | None = None
        self.warning: str | None = None

    @property
    def std_valid(self) -> bool:
        """The absolute std rule presumes a head that centres z (module docstring)."""
        return self.cos0 is None or self.cos0 < CENTRED_COS

    def _remember(self, metrics: dict[str, float]) -> dict[str, float]:
        """Take this reading's slow and start-of-run numbers; returns the quantities read anew."""
        self.last_rank = metrics.get("z_erank", self.last_rank)  # RankMe may be read every few steps only
        self.last_rank_centred = metrics.get("z_erank_centred", self.last_rank_centred)
        fresh = {"std": min(metrics["z_std"], metrics.get("p_std", metrics["z_std"]))}
        rank = metrics.get("z_erank_centred", metrics.get("z_erank"))
        if rank is not None:
            fresh["rank"] = rank
        if "cos_images" in metrics:
            fresh["spread"] = 1.0 - metrics["cos_images"]
            if self.cos0 is None:
                self.cos0 = metrics["cos_images"]
        for name, value in fresh.items():
            top, n = self.early.get(name, [-math.inf, 0])
            if n < BASELINE_READINGS:
                self.early[name] = [max(top, value), n + 1]
        return fresh

    def gauges(self, metrics: dict[str, float]) -> list[Gauge]:
        """The rules valid for this run, on these metrics (RankMe: the latest reading)."""
        out = []
        if self.std_valid:
            std = min(metrics["z_std"], metrics.get("p_std", metrics["z_std"]))
            out.append(Gauge("std", std, self.threshold, f"std {std:.4f} < {self.threshold:.4f}"))
        centred = self.last_rank_centred is not None
        rank = self.last_rank_centred if centred else self.last_rank
        if rank is not None:
            what = "centred RankMe(z)" if centred else "RankMe(z)"
            top = self.early.get("rank", [0.0])[0]
            drop = top / self.rank_drop if self.rank_drop else 0.0
            if drop > (self.rank_floor or 0.0):
                out.append(Gauge("rank", rank, drop, f"{what} {rank:.2f} < {top:.1f}/{self.rank_drop:g} "
                                                     f"(its early maximum / {self.rank_drop:g})"))
            elif self.rank_floor:
                out.append(Gauge("rank", rank, self.rank_floor, f"{what} {rank:.2f} < {self.rank_floor}"))
        if "cos_images" in metrics and self.spread_drop and "spread" in self.early:
            spread, start = 1.0 - metrics["cos_images"], self.early["spread"][0]
            out.append(Gauge("spread", spread, start / self.spread_drop,
                             f"1 − cos_images {spread:.4f} < {start:.4f}/{self.spread_drop:g} "
                             f"(its start / {self.spread_drop:g})"))
        return out

    def below(self, metrics: dict[str, float]) -> str | None:
        """Why these metrics count as collapsed, or None."""
        return next((g.text for g in self.gauges(metrics) if g.value < g.threshold), None)

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Feed one step's metrics; True exactly once, on the step the detector fires.
        Steps must come in order (a deferred reading arrives late, never out of order)."""
        fresh = self._remember(metrics)
        if self.step is not None:
            return False
        gauges = self.gauges(metrics)
        self._watch_trends(step, gauges, fresh)
        why = next((g.text for g in gauges if g.value < g.threshold), None)
        if self._streak is None and why is not None:
            self._streak = (step, why)
        elif self._streak is not None and all(g.value >= g.threshold * RELEASE for g in gauges):
            self._streak = None
        if self._streak is None:
            return False
        start, first_why = self._streak
        if step - start + 1 < self.patience:
            return False
        self.step, self.reason = start, first_why + (f", held {self.patience} steps" if self.patience > 1 else "")
        return True

    def _watch_trends(self, step: int, gauges: list[Gauge], fresh: dict[str, float]) -> None:
        """Record the first warning: a rule below its threshold (collapse pending `patience`), or one
        whose log-linear trend over its last WARN_WINDOW readings (3 at least) crosses the threshold
        within `warn_horizon` steps and within the span of those readings (no further ahead than they
        reach back). In log space because the quantities fall geometrically when a run collapses."""
        for g in gauges:
            if self.warning_step is None and self.warn_horizon and g.value < g.threshold:
                self.warning_step, self.warning = step, g.text
            if g.name not in fresh or self.early[g.name][1] < BASELINE_READINGS:
                # RankMe between its readings is no new point; the start's fast transient (a healthy run's
                # std and RankMe fall steeply over its first readings, then level off) is no trend
                continue
            hist = self.history.setdefault(g.name, [])
            hist.append([step, math.log(max(g.value, 1e-12))])
            del hist[:-WARN_WINDOW]
            if self.warning_step is not None or not self.warn_horizon:
                continue
            eta = steps_to_cross(hist, math.log(max(g.threshold, 1e-12)))
            if eta is not None and eta <= min(self.warn_horizon, hist[-1][0] - hist[0][0]):
                self.warning_step = step
                self.warning = f"{g.text.replace(' < ', ' heading below ', 1)} in ≈ {eta:.0f} steps (trend)"

    def state_dict(self) -> dict:
        """Everything the detector has learnt (start, trend, streak, verdict) as plain values, for a checkpoint."""
        return {"collapse_step": self.step, "collapse_reason": self.reason,
                "streak": list(self._streak) if self._streak else None, "last_rank": self.last_rank,
                "last_rank_centred": self.last_rank_centred, "cos0": self.cos0,
                "early": {k: list(v) for k, v in self.early.items()},
                "history": {k: [list(p) for p in v] for k, v in self.history.items()},
                "warning_step": self.warning_step, "warning": self.warning}

    def load_state_dict(self, state: dict) -> None:
        """A state saved before the start-relative rules existed has no start: the spread and RankMe
        starts are taken anew from the next readings (against a start that may be collapsed already:
        less sensitive, never a false alarm), and its std rule stays on, as it was."""
        self.step, self.reason = state.get("collapse_step"), state.get("collapse_reason")
        streak = state.get("streak")
        self._streak = (int(streak[0]), str(streak[1])) if streak else None
        self.last_rank = state.get("last_rank")
        self.last_rank_centred = state.get("last_rank_centred")
        self.cos0 = state.get("cos0", 0.0 if "early" not in state else None)  # 0.0: std rule on, as before
        self.early = {k: [float(v[0]), int(v[1])] for k, v in (state.get("early") or {}).items()}
        self.history = {k: [[int(s), float(x)] for s, x in v] for k, v in (state.get("history") or {}).items()}
        self.warning_step, self.warning = state.get("warning_step"), state.get("warning")


def steps_to_cross(points: list[list[float]], level: float) -> float | None:
    """Steps from the last point until the least-squares line through `points` ([step, value], 3 or
    more) falls to `level`; None when it does not fall."""
    if len(points) < 3:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    if slope >= 0:
        return None
    return max(0.0, (level - ys[-1]) / slope)
