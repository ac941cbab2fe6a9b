"""Every instrument of a training run, reached by the loop through this one object.

    before_step(step, views)  gradient split g1/g2 on the step's own views (probe steps;
                              restores BN buffers)
    after_backward()          snapshot of the weights, to measure the update
    end_step(...)             the step's loss, finite flag and (log steps) collapse metrics,
                              queued for reading
    after_step(step, result)  module speeds ‖Δw‖/‖w‖ and, for a linear predictor, its
                              spectrum, queued with the split as the probe record (probe steps)
    ready(block)              the queued numbers that have reached the host, as `StepReading`s
                              and probe records; the collapse detector reads them in step order
    heldout(step)             collapse readings on the fixed held-out batch (heldout_every steps)
    headline()                the progress bar's numbers; state_dict() for checkpoints

Nothing here reads a value from the device during a step (probes/deferred.py says why):
a probe costs one extra encoder pass, two backward passes and no wait.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from siamdyn.config import Config
from siamdyn.distributed import Dist
from siamdyn.methods import SiameseMethod, StepOutput
from siamdyn.methods.parallel_views import ViewThreads
from siamdyn.probes.collapse import CollapseMonitor, collapse_tensors, finish_metrics, stack_scalars
from siamdyn.probes.deferred import DeferredReads, Stopwatch
from siamdyn.probes.gradients import ModuleSpeeds, gradient_split_tensors, read_values
from siamdyn.probes.heldout import HeldoutProbe
from siamdyn.probes.spectrum import predictor_spectrum
from siamdyn.probes.sync_count import reading_host_copies


@dataclass
class StepReading:
    """One training step's numbers, as read on the host."""
    step: int  # steps done, counting this one (what metrics.jsonl calls "step")
    loss: float
    finite: bool  # the loss and every gradient finite
    metrics: dict[str, float] | None = None  # collapse metrics (log steps on rank 0)
    extra: dict = field(default_factory=dict)  # plain values recorded when the step ran (lr, time …)
    fired: bool = False  # the collapse detector fired on this step's metrics
    warned: bool = False  # the collapse detector raised its first warning on this step's metrics


class ProbeSession:
    def __init__(self, model: SiameseMethod, cfg: Config, ctx: Dist = Dist(), heldout: HeldoutProbe | None = None,
                 view_threads: ViewThreads | None = None):
        self.model, self.every, self.first, self.ctx = model, cfg.probe_every, cfg.probe_first, ctx
        self.view_threads = view_threads  # the training step's, if it has them: the gradient split uses them too
        self._heldout = heldout
        self.monitor = CollapseMonitor(cfg.proj_dim, rank_floor=cfg.collapse_rank_floor, patience=cfg.collapse_patience)
        self.linear_predictor = cfg.predictor == "linear"
        device = next(model.parameters()).device
        self.reads = DeferredReads(device)
        # RankMe's eigensolves: on a worker thread when the model trains on a GPU (end_step), at
        # once on a CPU, where the cores are the model's
        self.solve_in_thread = device.type == "cuda"
        # Float64 eigensolves per reading (two then; three since the centred RankMe of z): 0.5 ms beside a
        # 170 ms CPU step, but on an H200 two took the step from 0.037 to 0.083 s
        # (bench/results/speed_cuda_h200_b1024_deferred_v2.md).
        self.rank_every = cfg.rank_every or (10 if device.type == "cuda" else 1)
        self.log_every = cfg.log_every
        self.device = device
        self.grad_step = 0
        self.watch = Stopwatch(device)  # time spent in gradient/speed/held-out probes, to report their cost
        self.active = False
        self._split: dict[str, torch.Tensor] = {}
        self._speeds = ModuleSpeeds(model.module_groups())

    # ------------------------------------------------------------------ probe steps
    def before_step(self, step: int, views: list[torch.Tensor], xbar: torch.Tensor | None) -> None:
        self.active = (bool(self.every) and step % self.every == 0) or step < self.first
        if self.active:
            # Every rank joins (its forward passes hold collectives); g1, g2 are averaged over ranks.
            with self.watch.section():
                self._split = gradient_split_tensors(self.model, views, xbar, self.ctx, pool=self.view_threads)

    def after_backward(self) -> None:
        if self.active and self.ctx.is_main:
            with self.watch.section():
                self._speeds.snapshot()

    def after_step(self, step: int, result: StepOutput) -> None:
        """Queue the probe record of step `step` (0-based; rank 0 only: weights agree across ranks)."""
        if not (self.active and self.ctx.is_main):
            return
        with self.watch.section():
            tensors = {**self._split, **self._speeds.measure_tensors()}
            # The DirectPred spectrum reads eigenvectors on the host: a linear predictor's probes wait for it.
            spectrum = (predictor_spectrum(self.model.predictor.weight, torch.cat(result.z))
                        if self.linear_predictor else {})
        self.reads.push(step + 1, ("probe", step + 1, spectrum), tensors)

    # ------------------------------------------------------------------ every step
    def end_step(self, step: int, loss: torch.Tensor, finite: torch.Tensor, result: StepOutput | None,
                 extra: dict, final: bool = False) -> None:
        """Queue step `step`'s loss and finite flag, and its collapse metrics when `result` is
        given (a log step; RankMe every `rank_every` steps and at the `final` one); `extra`
        holds plain values to log beside them."""
        tensors = {"loss": loss.detach().float().reshape(()), "finite": finite.reshape(())}
        self.grad_step = step + 1  # the step whose gradients the parameters hold now
        names: list[str] = []
        if result is not None:
            # the logged step that ends or first follows each multiple of rank_every, whatever
            # log_every is; a function of the step alone, so a resumed run reads where it would have
            r = self.rank_every
            ranks = final or (step + 1) // r > (step + 1 - self.log_every) // r
            scalars, grams = collapse_tensors(result.z, result.p, result.features[0], ranks)
            names = list(scalars)
            tensors.update(values=stack_scalars(scalars), **{f"gram/{k}": g for k, g in grams.items()})
        solving: list[Future] = []  # the worker thread's RankMe, when it solves this record's
        host, landed = self.reads.push(step + 1, ("step", step + 1, names, extra, solving), tensors)
        if names and self.solve_in_thread and any(k.startswith("gram/") for k in host):
            # started as soon as the copies land, so the loop keeps feeding the GPU meanwhile
            solving.append(rank_solver().submit(_finish_on_host, names, host, landed, self.device))

    def ready(self, block: bool = False) -> list[StepReading | dict]:
        """What is due from the queue, oldest first: `StepReading`s (the detector has seen their
        metrics) and probe records (dicts, ready to log)."""
        with reading_host_copies():
            return [self._reading(meta, t) for meta, t in self.reads.ready(block)]

    def _reading(self, meta: tuple, t: dict[str, torch.Tensor]) -> StepReading | dict:
        if meta[0] == "probe":
            _, step, spectrum = meta
            return {"step": step, **read_values(t), **spectrum, "probe_time_s": self.seconds}
        _, step, names, extra, solving = meta
        reading = StepReading(step, float(t["loss"]), bool(t["finite"]), extra=extra)
        if names and reading.finite:
            metrics = solving[0].result() if solving else _finish_on_host(names, t)
            reading.metrics = self.monitor.feed(step, metrics)
            reading.fired, reading.warned = self.monitor.fired, self.monitor.warned
        return reading

    # ------------------------------------------------------------------ collapse
    def heldout_due(self, step: int) -> bool:
        return self._heldout is not None and self._heldout.due(step)

    def heldout(self, step: int) -> dict | None:
        """The held-out readings after `step` steps, when due (every rank reads; rank 0 returns them)."""
        if self._heldout is None or not self._heldout.due(step):
            return None
        with self.watch.section():
            record = self._heldout.read(step)
        return record if self.ctx.is_main else None

    @property
    def seconds(self) -> float:
        """Time spent in the probes so far (device time on a GPU) whose work has finished."""
        return self.watch.seconds()

    def headline(self) -> dict[str, str]:
        return self.monitor.headline()

    def summary(self) -> dict:
        d = self.monitor.detector
        return {"collapse_step": d.step, "collapse_reason": d.reason, "collapse_threshold": d.threshold,
                "collapse_warning_step": d.warning_step, "collapse_warning": d.warning,
                "probe_time_s": self.watch.seconds(block=True)}

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.monitor.load_state_dict(state)


_SOLVER: list[ThreadPoolExecutor] = []  # one worker thread per process, shared by every run in it


def rank_solver() -> ThreadPoolExecutor:
    """The worker thread that solves RankMe's eigenproblems of GPU runs (made on first use)."""
    if not _SOLVER:
        _SOLVER.append(ThreadPoolExecutor(1, thread_name_prefix="siamdyn-rankme"))
    return _SOLVER[0]


def _finish_on_host(names: list[str], t: dict[str, torch.Tensor], landed: object = None,
                    device: torch.device | None = None) -> dict[str, float]:
    """The collapse metrics of a step record's host copies: its scalars and RankMe's eigensolves
    (float64). `landed`: the CUDA event after which the copies hold their values, recorded on
    `device` (made current on the worker thread too, or it would open a context on GPU 0)."""
    if landed is not None:
        torch.cuda.set_device(device)
        landed.synchronize()
    grams = {k.split("/", 1)[1]: g for k, g in t.items() if k.startswith("gram/")}
    with reading_host_copies():  # host copies: nothing here waits for the device
        return finish_metrics(names, t["values"], grams)
