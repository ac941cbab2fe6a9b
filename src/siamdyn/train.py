"""The training loop, top to bottom: data → views → method → loss → step → metrics.

One call, `train(cfg, out)`, makes a run directory (runs.py) and returns its summary. The
setup lives in runtime.py, the optimiser and schedules in optim.py, the instruments in
probes/ (one `ProbeSession`), the checkpoint format in checkpoint.py, kNN in eval.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from siamdyn.checkpoint import CKPT_FILE, Checkpoint
from siamdyn.config import Config
from siamdyn.distributed import (Dist, any_rank, gather_objects, init_distributed, mean_over_ranks,
                                 shutdown_distributed, weights_digest)
from siamdyn.errors import ConfigError, SiamdynError, TrainingDiverged, warn
from siamdyn.eval import knn_accuracy, time_to_accuracy
from siamdyn.optim import ema_tau, lr_factor, set_lr
from siamdyn.probes.heldout import HeldoutProbe
from siamdyn.probes.session import ProbeSession
from siamdyn.runs import (CONFIG_FILE, MetricsLog, NullLog, RunLock, atomic_write_text, check_not_in_use,
                          check_resume_compatible, check_run_dir, load_run_config, prepare_run_dir, truncate_metrics,
                          write_config)
from siamdyn.hardware import PrecisionChoice, machine_precision, resolve_precision
from siamdyn.runtime import Session, build_session, epoch_order, eval_input, make_views, pick_device, rank_batch
from siamdyn.signals import StopSignals
from siamdyn.tensorboard_log import TensorBoardLog, check_tensorboard_installed

RunLog = MetricsLog | NullLog | TensorBoardLog  # where metric lines go (rank 0 writes, others drop them)


@dataclass
class Progress:
    """Where the run stands; what a checkpoint carries besides weights and RNG streams."""
    step: int = 0
    knn: list[dict] = field(default_factory=list)
    elapsed_before: float = 0.0  # wall time of the run's earlier sessions
    t_start: float = field(default_factory=time.perf_counter)
    stopped_on_collapse: bool = False
    initial_norm: float | None = None  # the weights' norm when this session started
    warned_growth: bool = False

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start


def train(cfg: Config, out: str, overwrite: bool = False, resume: bool = False, progress: bool = True,
          initial_state: dict | None = None, desc: str | None = None, lock_held: bool = False) -> dict[str, Any]:
    """Train `cfg` into run directory `out`; returns the summary (also in summary.json).
    Under torchrun every rank calls this; rank 0 alone writes to `out`. `lock_held`: the
    caller already holds `runs.RunLock(out)` (the experiment runner decides under it)."""
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, out, overwrite, resume, progress, initial_state, desc or cfg.preset, ctx, lock_held)
    finally:
        shutdown_distributed()


def _train(cfg: Config, out: str, overwrite: bool, resume: bool, progress: bool, initial_state: dict | None,
           desc: str, ctx: Dist, lock_held: bool) -> dict[str, Any]:
    # -- set up; bad config or data fails here, before `out` is touched
    saved = load_run_config(out) if resume and os.path.exists(os.path.join(out, CONFIG_FILE)) else None
    cfg, precision = resolve_auto(cfg, ctx, saved)
    changes = check_resume_compatible(saved, cfg) if saved else {}
    if cfg.tensorboard:
        check_tensorboard_installed()
    if ctx.is_main and not lock_held:
        check_not_in_use(out)
    check_run_dir(out, overwrite, resume, lock_free=False)
    s = build_session(cfg, ctx, initial_state)
    finished = finished_summary(out, s) if resume else None
    if finished is not None:
        return finished
    with RunLock(out) if ctx.is_main and not lock_held else contextlib.nullcontext():
        if ctx.is_main:
            prepare_run_dir(out, overwrite, resume)
        return _train_locked(cfg, out, resume, progress, desc, ctx, s, changes, precision)


def resolve_auto(cfg: Config, ctx: Dist, saved: Config | None) -> tuple[Config, PrecisionChoice]:
    """precision=auto → fp32 or bf16 for this machine (hardware.py), decided by rank 0 for all
    ranks (the run says which once it starts)."""
    # Rank 0 alone measures (the other ranks would compete with it for the cores), then tells them.
    choose = machine_precision if ctx.is_main else (lambda device: PrecisionChoice("fp32", "rank 0 decides"))
    _, choice = resolve_precision(cfg, pick_device(cfg.device, ctx), saved, choose)
    choice = gather_objects(ctx, choice)[0]
    return dataclasses.replace(cfg, precision=choice.precision), choice


def finished_summary(out: str, s: Session) -> dict[str, Any] | None:
    """The summary of a run that has already reached its last step (a resume then changes nothing)."""
    path = os.path.join(out, "summary.json")
    if not os.path.exists(path) or Checkpoint.load_run(out).step < s.total_steps:
        return None
    with open(path) as f:
        summary = json.load(f)
    if s.ctx.is_main:
        print(f"siamdyn: {out} already finished at step {summary['steps']}; nothing to resume (raise epochs or "
              "max_steps with --set to train on)", file=sys.stderr)
    return summary


def _train_locked(cfg: Config, out: str, resume: bool, progress: bool, desc: str, ctx: Dist,
                  s: Session, changes: dict[str, list], precision: PrecisionChoice) -> dict[str, Any]:
    heldout = HeldoutProbe(s.model, s.test_set.images[:cfg.heldout_images].to(s.device), eval_input(cfg, s.augment),
                           cfg.heldout_every)
    probes = ProbeSession(s.model, cfg, ctx, heldout)
    run = Progress()
    # -- continue from the checkpoint, or record the config of a new run
    if resume:
        restore(out, s, probes, run)
    elif ctx.is_main:
        write_config(out, cfg, resolved={"precision": precision.reason})
    if ctx.is_main:
        print(f"siamdyn: precision {cfg.precision} ({precision.reason})", file=sys.stderr)
    # -- the steps; a stop request (SIGINT, SIGTERM) ends them at a step boundary
    log = MetricsLog(os.path.join(out, "metrics.jsonl")) if ctx.is_main else NullLog()
    if cfg.tensorboard and ctx.is_main:
        log = TensorBoardLog(log, out, resume_step=run.step if resume else None)
    if changes:  # resumable changes (run length, logging, device …): said once, and kept in the log
        log.write({"step": run.step, "resume_changes": changes})
        if ctx.is_main:
            print(f"siamdyn: resuming at step {run.step} with " + ", ".join(f"{k} {a!r} → {b!r}"
                  for k, (a, b) in changes.items()), file=sys.stderr)
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
    return write_summary(out, s, probes, run)


def restore(out: str, s: Session, probes: ProbeSession, run: Progress) -> None:
    """Weights, optimiser, RNG streams, instruments and progress as the checkpoint left them."""
    ckpt = Checkpoint.load_run(out)  # on the CPU: load_state_dict copies to the model's device
    if ckpt.world_size != s.ctx.world:
        raise ConfigError(f"the run was made with {ckpt.world_size} processes and is resumed with "
                          f"{s.ctx.world}; resume with the same number (the augmentation streams are per process)")
    ckpt.restore(s.model, s.optimizer, s.aug_gen, s.ctx.rank)
    probes.load_state_dict(ckpt.probes)
    run.step, run.knn, run.elapsed_before = ckpt.step, ckpt.knn, ckpt.elapsed_s
    if s.ctx.is_main:
        truncate_metrics(out, run.step)  # lines a killed run wrote after its last checkpoint


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
    """Train until `total_steps` (or a stop request: returns True, with a checkpoint)."""
    cfg, ctx = s.cfg, s.ctx
    rate = RateMeter()
    s.model.train()
    run.initial_norm = weight_norm(s.model)
    start = probes.heldout(run.step) if run.step == 0 else None  # the random-init reading
    if start:
        log.write(start)
    while run.step < s.total_steps:
        epoch, first_batch = divmod(run.step, s.steps_per_epoch)
        order = epoch_order(cfg, len(s.images), epoch)
        for b in range(first_batch, s.steps_per_epoch):
            if run.step >= s.total_steps:
                break
            if any_rank(ctx, stop.requested):
                save_checkpoint(out, s, probes, run, log)
                return True
            x = s.images[rank_batch(order, b, cfg.batch_size, ctx).to(s.device)]
            loss, result, factor = train_step(s, probes, x, run.step, log, out)
            tau = ema_tau(cfg, run.step, s.schedule_steps)
            s.model.update_target(tau)
            run.step += 1
            rate.count(len(x) * ctx.world)
            fired = False
            if ctx.is_main and (run.step % cfg.log_every == 0 or run.step == s.total_steps):
                fired = log_step(s, probes, run, log, bar, loss, result, dict(lr=cfg.scaled_lr * factor, tau=tau,
                                 images_per_s=rate.read()), desc)
            if cfg.stop_on_collapse and any_rank(ctx, fired):
                run.stopped_on_collapse = True
                s.total_steps = run.step  # end here: the kNN and checkpoint below still run
            heldout = probes.heldout(run.step)
            if heldout:
                log.write(heldout)
            bar.update(1)
            if cfg.ckpt_every and run.step % cfg.ckpt_every == 0:
                save_checkpoint(out, s, probes, run, log)
        at_epoch_end = run.step % s.steps_per_epoch == 0
        if (cfg.knn_every and at_epoch_end and (run.step // s.steps_per_epoch) % cfg.knn_every == 0) \
                or run.step >= s.total_steps:
            evaluate(s, run, log, bar, desc)
        save_checkpoint(out, s, probes, run, log)
    return False


def train_step(s: Session, probes: ProbeSession, x: torch.Tensor, step: int, log: RunLog,
               out: str) -> tuple[torch.Tensor, Any, float]:
    """One optimiser step on batch `x`: views, forward, backward, checks, update, probes."""
    cfg = s.cfg
    views, xbar = make_views(s.model, s.augment, x, s.aug_gen)
    factor = lr_factor(cfg, step, s.schedule_steps, s.steps_per_epoch)
    set_lr(s.optimizer, cfg, factor)
    with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        probes.before_step(step, views, xbar)  # on the same views, before the step
        result = s.net(views, xbar)
    loss = mean_over_ranks(s.ctx, result.loss.detach())  # the global-batch loss
    s.optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    check_finite(s, loss, step, out)
    probes.after_backward()
    s.optimizer.step()
    record = probes.after_step(result)
    if record:
        log.write(record)
    return loss, result, factor


def check_finite(s: Session, loss: torch.Tensor, step: int, out: str) -> None:
    """Stop on a non-finite loss or gradient, naming where it went bad first (the step's one host sync)."""
    bad = s.model.nonfinite_gradient(loss)
    where = os.path.join(out, CKPT_FILE)
    if bad == "loss":
        raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1}; the last good checkpoint is in "
                               f"{where} — lower lr and start again")
    if bad:
        raise TrainingDiverged(f"the gradient became non-finite at step {step + 1}, first in {bad} "
                               f"(loss {loss.item():.4g}); the last good checkpoint is in {where} — "
                               "lower lr (or predictor_lr_scale) and start again")


def log_step(s: Session, probes: ProbeSession, run: Progress, log: RunLog, bar: tqdm, loss: torch.Tensor,
             result: Any, extra: dict[str, float], desc: str) -> bool:
    """Log this step's loss and collapse metrics; True when the collapse detector fires now."""
    metrics = probes.observe(run.step, result)
    loss_value = loss.item()
    log.write({"step": run.step, "epoch": run.step / s.steps_per_epoch, "loss": loss_value, **metrics, **extra,
               "time_s": run.elapsed()})
    bar.set_postfix(loss=f"{loss_value:.3f}", **probes.headline(), img_s=f"{extra['images_per_s']:.0f}", refresh=False)
    if probes.fired:
        d = probes.monitor.detector
        bar.write(f"[{desc}] collapse detected at step {run.step} (since step {d.step}): {d.reason}")
    return probes.fired


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
    summary = {"preset": s.cfg.preset, "steps": run.step, "epochs": run.step / max(1, s.steps_per_epoch),
               "processes": s.ctx.world, "final_knn_acc": run.knn[-1]["knn_acc"] if run.knn else None, "knn": run.knn,
               **{k: v for k, v in probes.summary().items() if k != "probe_time_s"},
               "stopped_on_collapse": run.stopped_on_collapse,
               "time_to_knn": time_to_accuracy(run.knn, s.cfg.knn_target_levels),
               "probe_time_s": probes.seconds, "wall_time_s": run.elapsed()}
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
