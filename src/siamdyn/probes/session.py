"""Every instrument of a training run, reached by the loop through this one object.

    before_step(step, views)  gradient split g1/g2 on the step's own views (probe steps;
                              restores BN buffers)
    after_backward()          snapshot of the weights, to measure the update
    after_step(result)        module speeds ‖Δw‖/‖w‖ and, for a linear predictor, its
                              spectrum → the probe record to log (probe steps)
    observe(step, result)     collapse metrics of the step's batch and the collapse detector
                              (log steps) → the metrics to log; `fired` says whether it fired
    heldout(step)             collapse readings on the fixed held-out batch (heldout_every steps)
    headline()                the progress bar's numbers; state_dict() for checkpoints
"""
from __future__ import annotations

import time

import torch

from siamdyn.config import Config
from siamdyn.distributed import Dist
from siamdyn.methods import SiameseMethod, StepOutput
from siamdyn.probes.collapse import CollapseMonitor
from siamdyn.probes.gradients import ModuleSpeeds, gradient_split
from siamdyn.probes.heldout import HeldoutProbe
from siamdyn.probes.spectrum import predictor_spectrum


class ProbeSession:
    def __init__(self, model: SiameseMethod, cfg: Config, ctx: Dist = Dist(), heldout: HeldoutProbe | None = None):
        self.model, self.every, self.first, self.ctx = model, cfg.probe_every, cfg.probe_first, ctx
        self._heldout = heldout
        self.monitor = CollapseMonitor(cfg.proj_dim, rank_floor=cfg.collapse_rank_floor, patience=cfg.collapse_patience)
        self.linear_predictor = cfg.predictor == "linear"
        self.seconds = 0.0  # total time spent in gradient/speed probes, to report their cost
        self.active = False
        self.record: dict = {}
        self._speeds = ModuleSpeeds(model.module_groups())

    # ------------------------------------------------------------------ probe steps
    def before_step(self, step: int, views: list[torch.Tensor], xbar: torch.Tensor | None) -> None:
        self.active = (bool(self.every) and step % self.every == 0) or step < self.first
        if self.active:
            t = time.perf_counter()
            # Every rank joins (its forward passes hold collectives); g1, g2 are averaged over ranks.
            self.record = {"step": step + 1, **gradient_split(self.model, views, xbar, self.ctx)}
            self.seconds += time.perf_counter() - t

    def after_backward(self) -> None:
        if self.active and self.ctx.is_main:
            t = time.perf_counter()
            self._speeds.snapshot()
            self.seconds += time.perf_counter() - t

    def after_step(self, result: StepOutput) -> dict | None:
        """The probe record of this step (rank 0 only; weights are the same on every rank)."""
        if not (self.active and self.ctx.is_main):
            return None
        t = time.perf_counter()
        self.record.update(self._speeds.measure())
        if self.linear_predictor:
            self.record.update(predictor_spectrum(self.model.predictor.weight, torch.cat(result.z)))
        self.seconds += time.perf_counter() - t
        return {**self.record, "probe_time_s": self.seconds}

    # ------------------------------------------------------------------ collapse
    def observe(self, step: int, result: StepOutput) -> dict[str, float]:
        """Collapse metrics of this step's batch, fed to the detector."""
        return self.monitor.update(step, result.z, result.p, result.features[0])

    def heldout(self, step: int) -> dict | None:
        """The held-out readings after `step` steps, when due (every rank reads; rank 0 returns them)."""
        if self._heldout is None or not self._heldout.due(step):
            return None
        t = time.perf_counter()
        record = self._heldout.read(step)
        self.seconds += time.perf_counter() - t
        return record if self.ctx.is_main else None

    @property
    def fired(self) -> bool:
        return self.monitor.fired

    def headline(self) -> dict[str, str]:
        return self.monitor.headline()

    def summary(self) -> dict:
        d = self.monitor.detector
        return {"collapse_step": d.step, "collapse_reason": d.reason, "collapse_threshold": d.threshold,
                "probe_time_s": self.seconds}

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.monitor.load_state_dict(state)
