"""The training loop, top to bottom: data → views → method → loss → step → metrics.

One call, `train(cfg, out)`, makes a run directory (runs.py) and returns its summary. What runs
before the first step, and the transaction that keeps a failed start from leaving a run directory
behind, live in train_start.py and run_start.py; the session's setup in runtime.py, the optimiser
and schedules in optim.py, the instruments in probes/ (one `ProbeSession`), the checkpoint format
in checkpoint.py, kNN in eval.py.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Callable

import torch
from tqdm import tqdm

from siamdyn.checkpoint import CKPT_FILE, Checkpoint
from siamdyn.config import Config
from siamdyn.distributed import (Dist, any_rank, gather_objects, init_distributed, mean_over_ranks,
                                 shutdown_distributed, weights_digest)
from siamdyn.errors import SiamdynError, TrainingDiverged, warn
from siamdyn.eval import knn_accuracy, time_to_accuracy
from siamdyn.loggers import LoggerTarget, MultiLogger, as_logger
from siamdyn.methods import StepOutput
from siamdyn.methods.parallel_views import forward_backward as parallel_forward_backward
from siamdyn.optim import ema_tau, lr_factor, set_lr
from siamdyn.probes.session import ProbeSession, StepReading
from siamdyn.run_start import RunStart
from siamdyn.runs import RunLock, atomic_write_text
from siamdyn.runtime import Session, epoch_order, eval_input, make_views, rank_batch
from siamdyn.signals import StopSignals
from siamdyn.train_start import Progress, RunLog, Start, begin, check_start, finished_summary
from siamdyn.toplevel import mark_run_dir

def train(cfg: Config, out: str, overwrite: bool = False, resume: bool = False, progress: bool = True,
          initial_state: dict | None = None, desc: str | None = None, lock_held: bool = False,
          loggers: LoggerTarget = None) -> dict[str, Any]:
    """Train `cfg` into run directory `out`; returns the summary (also in summary.json).
    Under torchrun every rank calls this; rank 0 alone writes to `out`. `lock_held`: the
    caller already holds `runs.RunLock(out)` (the experiment runner decides under it). `loggers`: where
    every metrics line is mirrored besides metrics.jsonl: a callable fn(metrics, step), a Logger, or a
    list of them (`siamdyn.as_logger`; checked before anything starts)."""
    sinks = as_logger(loggers)  # a wrong kind of logger fails here, before any process group or file
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, out, overwrite, resume, progress, initial_state, desc or cfg.preset, ctx, lock_held,
                      sinks)
    finally:
        shutdown_distributed()


def _train(cfg: Config, out: str, overwrite: bool, resume: bool, progress: bool, initial_state: dict | None,
           desc: str, ctx: Dist, lock_held: bool, loggers: MultiLogger) -> dict[str, Any]:
    # -- the start: bad config, data, checkpoint or schedule fails here, before `out` is touched
    st = check_start(cfg, out, overwrite, resume, ctx, initial_state, lock_held, loggers)
    finished = finished_summary(out, st) if resume else None
    if finished is not None:
        return finished
    start = RunStart(out, replace=overwrite and not resume, enabled=ctx.is_main)  # before the lock makes `out`
    with RunLock(out) if ctx.is_main and not lock_held else contextlib.nullcontext():
        with start:  # a start that fails leaves `out` as it was (a bug's traceback then goes to a temp file)
            run, log = begin(st, out)
        try:
            return _train_locked(st, out, progress, desc, run, log)
        except Exception as e:  # if it is a bug, its traceback belongs next to the run it broke (toplevel.py)
            mark_run_dir(e, out)
            raise


def _train_locked(st: Start, out: str, progress: bool, desc: str, run: Progress, log: RunLog) -> dict[str, Any]:
    s, probes, ctx = st.session, st.probes, st.session.ctx
    if ctx.is_main:
        print(f"siamdyn: precision {st.cfg.precision} ({st.precision.reason}); torch.compile "
              f"{'on' if s.compiled else 'off'} ({s.compile_reason}); parallel views {s.views_reason}",
              file=sys.stderr)
    if st.changes:  # resumable changes (run length, logging, device …): said once, and kept in the log
        log.write({"step": run.step, "resume_changes": st.changes})
        if ctx.is_main:
            print(f"siamdyn: resuming at step {run.step} with " + ", ".join(f"{k} {a!r} → {b!r}"
                  for k, (a, b) in st.changes.items()), file=sys.stderr)
    # -- the steps; a stop request (SIGINT, SIGTERM) ends them at a step boundary
    bar = tqdm(total=s.total_steps, initial=run.step, disable=not (progress and ctx.is_main), desc=desc,
               unit="step", dynamic_ncols=True, leave=True)
    try:
        with StopSignals() as stop:
            stopped = run_epochs(s, probes, run, log, bar, stop, out, desc)
    finally:
        bar.close()
        log.close()
    if stopped:
        raise SiamdynError(f"stopped at step {run.step}; checkpoint saved — continue with "
                           f"`siamdyn train --out {out} --resume` (same preset and --set values)")
    if stop.requested and ctx.is_main:  # it came during the final kNN or checkpoint: there was no step left
        print(f"siamdyn: the stop came after the last step ({run.step}); the run is complete, so it finishes "
              "(summary written, nothing to resume)", file=sys.stderr)
    return write_summary(out, s, probes, run)


def weight_norm(model: torch.nn.Module) -> float:
    return float(torch.sqrt(sum(p.detach().float().pow(2).sum() for p in model.parameters())))


def check_weight_growth(s: Session, run: Progress) -> None:
    """Warn once when the weights have grown 100× past their initial norm: a run diverging
    slowly (a huge lr under AdamW, say) stays finite for a long time before it is NaN."""
    norm = weight_norm(s.model)
    if run.initial_norm and norm > 100 * run.initial_norm and not run.warned_growth:
        run.warned_growth = True
        warn(f"the weights' norm grew from {run.initial_norm:.3g} to {norm:.3g} by step {run.step}: the run is "
             "probably diverging — lower lr")


def save_checkpoint(out: str, s: Session, probes: ProbeSession, run: Progress, log: RunLog) -> None:
    """Every rank joins (its augmentation stream and a digest of its weights are gathered);
    rank 0 writes. Ranks that disagree on the weights stop the run: DDP went wrong."""
    aug_rngs = gather_objects(s.ctx, s.aug_gen.get_state())
    digests = gather_objects(s.ctx, weights_digest(s.model, buffers=s.cfg.sync_bn)) if s.ctx.enabled else None
    if digests and len(set(digests)) > 1:
        raise SiamdynError(f"the {s.ctx.world} processes hold different weights at step {run.step}; "
                           "the checkpoint was not written — report this with the config")
    if s.ctx.is_main:
        check_weight_growth(s, run)
        Checkpoint.capture(s.model, s.optimizer, run.step, s.cfg.to_dict(), s.data_mean, s.data_std, aug_rngs,
                           world_size=s.ctx.world, rank_digests=digests, knn=run.knn, probes=probes.state_dict(),
                           elapsed_s=run.elapsed()).save(os.path.join(out, CKPT_FILE))
        log.sync()


def run_epochs(s: Session, probes: ProbeSession, run: Progress, log: RunLog, bar: tqdm,
               stop: StopSignals, out: str, desc: str) -> bool:
    """Train until `total_steps` (or a stop request: returns True, with a checkpoint). The
    step's numbers are read when they reach the host (`take_readings`), never waited for,
    except before a checkpoint, an evaluation and the end, so metrics.jsonl is whole there."""
    cfg, ctx = s.cfg, s.ctx
    rate = RateMeter()
    s.model.train()
    run.initial_norm = weight_norm(s.model)
    start = probes.heldout(run.step) if run.step == 0 else None  # the random-init reading
    if start:
        log.write(start)
    read = lambda block=False: take_readings(s, probes, run, log, bar, desc, out, block)  # noqa: E731
    compile_timer = CompileTimer(s)
    while run.step < s.total_steps:
        epoch, first_batch = divmod(run.step, s.steps_per_epoch)
        order = epoch_order(cfg, len(s.images), epoch).to(s.device)  # one upload per epoch, none per step
        for b in range(first_batch, s.steps_per_epoch):
            if run.step >= s.total_steps:
                break
            if any_rank(ctx, stop.requested):
                read(block=True)
                save_checkpoint(out, s, probes, run, log)
                return True
            x = s.images[rank_batch(order, b, cfg.batch_size, ctx)]
            rate.count(len(x) * ctx.world)
            tau = ema_tau(cfg, run.step, s.schedule_steps)
            factor = lr_factor(cfg, run.step, s.schedule_steps, s.steps_per_epoch)
            train_step(s, probes, x, run.step, factor, step_extra(s, run, rate, factor, tau), read)
            s.model.update_target(tau)
            run.step += 1
            compile_timer.after_step()
            if probes.heldout_due(run.step):  # a NaN not yet read must stop the run, not the readings
                read(block=True)
            stop_if_collapsed(s, run)
            heldout = probes.heldout(run.step)
            if heldout:
                log.write(heldout)
            bar.update(1)
            if cfg.ckpt_every and run.step % cfg.ckpt_every == 0:
                read(block=True)
                stop_if_collapsed(s, run)
                save_checkpoint(out, s, probes, run, log)
        read(block=True)
        stop_if_collapsed(s, run)
        at_epoch_end = run.step % s.steps_per_epoch == 0
        if (cfg.knn_every and at_epoch_end and (run.step // s.steps_per_epoch) % cfg.knn_every == 0) \
                or run.step >= s.total_steps:
            evaluate(s, run, log, bar, desc)
        save_checkpoint(out, s, probes, run, log)
    return False


def stop_if_collapsed(s: Session, run: Progress) -> None:
    """With stop_on_collapse, end the run at this step once the detector has fired (checked
    after every read of the instruments, the blocking ones before a checkpoint included)."""
    if s.cfg.stop_on_collapse and not run.stopped_on_collapse and any_rank(s.ctx, run.fired):
        run.stopped_on_collapse = True
        s.total_steps = run.step  # end here: the kNN and checkpoint below still run


def step_extra(s: Session, run: Progress, rate: "RateMeter", factor: float, tau: float) -> dict[str, float] | None:
    """What a log line carries beside the step's tensors, on the steps that log (rank 0)."""
    step = run.step + 1
    if not (s.ctx.is_main and (step % s.cfg.log_every == 0 or step == s.total_steps)):
        return None
    return {"epoch": step / s.steps_per_epoch, "lr": s.cfg.scaled_lr * factor, "tau": tau,
            "images_per_s": rate.read(), "time_s": run.elapsed()}


def train_step(s: Session, probes: ProbeSession, x: torch.Tensor, step: int, factor: float,
               extra: dict[str, float] | None, read: Callable[[], None]) -> None:
    """One optimiser step on batch `x` at lr factor `factor`: views, forward, backward, checks, update, probes. The
    loss, finite flag and (when `extra`, a log step) collapse metrics are queued; `read` takes
    whatever has reached the host, before the update, so a CPU run stops on a NaN gradient
    before it reaches the weights (on a GPU it is seen a step or two late)."""
    cfg = s.cfg
    views, xbar = make_views(s.model, s.augment, x, s.aug_gen)
    set_lr(s.optimizer, cfg, factor)
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        probes.before_step(step, views, xbar)  # on the same views, before the step
        s.optimizer.zero_grad(set_to_none=True)
        result = forward_backward(s, views, xbar)
    loss = mean_over_ranks(s.ctx, result.loss.detach())  # the global-batch loss
    probes.end_step(step, loss, s.model.gradient_finite(loss), result if extra is not None else None, extra or {},
                    final=step + 1 == s.total_steps)
    read()
    probes.after_backward()
    s.optimizer.step()
    probes.after_step(step, result)


def forward_backward(s: Session, views: list[torch.Tensor], xbar: torch.Tensor | None) -> StepOutput:
    """The step's loss, and its gradient in the parameters' .grad: each view on a thread of its own
    where `s.view_threads` is set (methods/parallel_views.py), else one forward and one backward."""
    if s.view_threads is not None:
        return parallel_forward_backward(s.model, views, xbar, s.view_threads)
    result = s.net(views, xbar)
    with torch.autocast(s.device.type, enabled=False):  # the backward runs as the forward ran
        result.loss.backward()
    return result


def take_readings(s: Session, probes: ProbeSession, run: Progress, log: RunLog, bar: tqdm, desc: str, out: str,
                  block: bool = False) -> None:
    """Log what the instruments' queue holds ready (all of it with `block`); stop on a
    non-finite step; note a collapse the detector dated (`run.fired`)."""
    for reading in probes.ready(block):
        if isinstance(reading, dict):  # a probe record
            log.write(reading)
            continue
        if not reading.finite:
            raise_nonfinite(s, reading, probes.grad_step, out)
        if reading.metrics is None:
            continue
        extra = dict(reading.extra)
        log.write({"step": reading.step, "epoch": extra.pop("epoch"), "loss": reading.loss, **reading.metrics,
                   **extra})
        bar.set_postfix(loss=f"{reading.loss:.3f}", **probes.headline(), img_s=f"{extra['images_per_s']:.0f}",
                        refresh=False)
        if reading.warned:
            bar.write(f"[{desc}] collapse warning at step {reading.step}: {probes.monitor.warning}")
        if reading.fired:
            run.fired = True
            d = probes.monitor.detector
            bar.write(f"[{desc}] collapse detected at step {reading.step} (since step {d.step}): {d.reason}")


def raise_nonfinite(s: Session, reading: StepReading, grad_step: int, out: str) -> None:
    """Stop on a non-finite loss or gradient, naming the module where it went bad first when
    that step's gradients are still there (always on a CPU)."""
    ckpt = os.path.join(out, CKPT_FILE)
    # a run that diverges before its first checkpoint has none to point at: it starts again with --overwrite
    kept = f"the last good checkpoint is in {ckpt}" if os.path.exists(ckpt) else \
        "no checkpoint was written before it (start again with --overwrite)"
    if not math.isfinite(reading.loss):
        raise TrainingDiverged(f"loss became {reading.loss} at step {reading.step}; {kept} — lower lr and start again")
    bad = s.model.nonfinite_gradient() if reading.step == grad_step else None
    place = f"first in {bad}" if bad else "seen after its gradients were gone (the GPU runs ahead of the host)"
    raise TrainingDiverged(f"the gradient became non-finite at step {reading.step}, {place} "
                           f"(loss {reading.loss:.4g}); {kept} — lower lr (or predictor_lr_scale) and start again")


class CompileTimer:
    """Says once what torch.compile's first step cost (it compiles there) against the next
    one, so a user sees what `compile` costs up front."""

    def __init__(self, s: Session):
        self.s, self.marks = s, [time.perf_counter()] if s.compiled and s.ctx.is_main else None

    def after_step(self) -> None:
        """Call after each step; prints once, after the second."""
        if self.marks is None:
            return
        if self.s.device.type == "cuda":
            torch.cuda.synchronize()  # twice per run, to time the compile honestly
        self.marks.append(time.perf_counter())
        if len(self.marks) == 3:
            first, second = self.marks[1] - self.marks[0], self.marks[2] - self.marks[1]
            print(f"siamdyn: torch.compile ({self.s.compile_reason}): the first step took {first:.1f} s "
                  f"(compiling), the next one {second:.3f} s", file=sys.stderr)
            self.marks = None


def evaluate(s: Session, run: Progress, log: RunLog, bar: tqdm, desc: str) -> None:
    """kNN of the backbone now; says when it first reaches each time-to-accuracy level."""
    acc = knn_accuracy(s.model, eval_input(s.cfg, s.augment), s.train_set, s.test_set, s.cfg, s.device, s.ctx)
    epoch = run.step / s.steps_per_epoch
    run.knn.append({"step": run.step, "epoch": epoch, "knn_acc": acc, "time_s": run.elapsed()})
    log.write({"step": run.step, "epoch": epoch, "knn_acc": acc})
    if s.ctx.is_main:
        crossings = time_to_accuracy(run.knn, s.cfg.knn_target_levels)
        reached = [f"{lv} %" for lv, hit in crossings.items() if hit and hit["step"] == run.step]
        bar.write(f"[{desc}] epoch {epoch:.2f}: kNN {acc:.2f} %"
                  + (f" — first at or above {', '.join(reached)} after {run.knn[-1]['time_s']:.0f} s" if reached
                     else ""))


def write_summary(out: str, s: Session, probes: ProbeSession, run: Progress) -> dict[str, Any]:
    probe_summary = probes.summary()
    summary = {"preset": s.cfg.preset, "steps": run.step, "epochs": run.step / max(1, s.steps_per_epoch),
               "processes": s.ctx.world, "final_knn_acc": run.knn[-1]["knn_acc"] if run.knn else None, "knn": run.knn,
               **{k: v for k, v in probe_summary.items() if k != "probe_time_s"},
               "stopped_on_collapse": run.stopped_on_collapse,
               "time_to_knn": time_to_accuracy(run.knn, s.cfg.knn_target_levels),
               "probe_time_s": probe_summary["probe_time_s"], "wall_time_s": run.elapsed()}
    if s.ctx.is_main:
        atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary


class RateMeter:
    """Images per second since the last reading."""

    def __init__(self) -> None:
        self.t, self.images = time.perf_counter(), 0

    def count(self, n: int) -> None:
        self.images += n

    def read(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(1e-9, now - self.t)
        self.t, self.images = now, 0
        return rate
