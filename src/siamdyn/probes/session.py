"""The probes of one training step, in the order the loop needs them, with their cost.

    before_step(views)  gradient split g1/g2 on the step's own views (restores BN buffers)
    after_backward()    snapshot of the weights, to measure the update
    after_step(result)  module speeds ‖Δw‖/‖w‖ and, for a linear predictor, its spectrum
"""
from __future__ import annotations

import time

import torch

from siamdyn.distributed import Dist
from siamdyn.methods import SiameseMethod, StepOutput
from siamdyn.probes.gradients import gradient_split, module_speeds, snapshot
from siamdyn.probes.spectrum import predictor_spectrum


class StepProbes:
    def __init__(self, model: SiameseMethod, every: int, ctx: Dist = Dist()):
        self.model, self.every, self.ctx = model, every, ctx
        self.seconds = 0.0  # total time spent in probes, to report their cost
        self.active = False
        self.record: dict = {}
        self._before: dict | None = None

    def before_step(self, step: int, views: list[torch.Tensor], xbar: torch.Tensor | None) -> None:
        self.active = bool(self.every) and step % self.every == 0
        if self.active:
            t = time.perf_counter()
            # Every rank joins (its forward passes hold collectives); g1, g2 are averaged over ranks.
            self.record = {"step": step + 1, **gradient_split(self.model, views, xbar, self.ctx)}
            self.seconds += time.perf_counter() - t

    def after_backward(self) -> None:
        if self.active and self.ctx.is_main:
            t = time.perf_counter()
            self._before = snapshot(self.model)
            self.seconds += time.perf_counter() - t

    def after_step(self, result: StepOutput) -> dict | None:
        """The probe record of this step (rank 0 only; weights are the same on every rank)."""
        if not (self.active and self.ctx.is_main):
            return None
        t = time.perf_counter()
        self.record.update(module_speeds(self.model, self._before))
        if self.model.cfg.predictor == "linear":
            self.record.update(predictor_spectrum(self.model.predictor.weight, torch.cat(result.z)))
        self.seconds += time.perf_counter() - t
        return {**self.record, "probe_time_s": self.seconds}
