"""The start of a training run: everything that can fail before the first step — config, the
checkpoint to resume, data, device, precision, schedules — runs in `check_start`, before the run
directory is touched; `begin` then writes the run's first files inside `run_start.RunStart`, which
undoes them if the start still fails (docs/reliability.md)."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from siamdyn.inputs import open_input
from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
from siamdyn.distributed import Dist, gather_objects
from siamdyn.errors import ConfigError
from siamdyn.hardware import PrecisionChoice, machine_precision, resolve_precision
from siamdyn.optim import ema_tau, lr_factor
from siamdyn.probes.heldout import HeldoutProbe
from siamdyn.probes.session import ProbeSession
from siamdyn.runs import (CONFIG_FILE, METRICS_FILE, MetricsLog, NullLog, check_not_in_use, check_resume_compatible,
                          check_run_dir, load_run_config, truncate_metrics, update_config, write_config)
from siamdyn.runtime import Session, build_session, eval_input, pick_device
from siamdyn.loggers import MultiLogger, RunLog as MirroredLog, check_run_loggers, run_log

RunLog = MetricsLog | NullLog | MirroredLog  # where metric lines go (rank 0 writes, others drop them)


@dataclass
class Progress:
    """Where the run stands; what a checkpoint carries besides weights and RNG streams."""
    step: int = 0
    knn: list[dict] = field(default_factory=list)
    elapsed_before: float = 0.0  # wall time of the run's earlier sessions
    t_start: float = field(default_factory=time.perf_counter)
    stopped_on_collapse: bool = False
    fired: bool = False  # the collapse detector fired (rank 0); stop_on_collapse ends the run
    initial_norm: float | None = None  # the weights' norm when this session started
    warned_growth: bool = False

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t_start


@dataclass
class Start:
    """What the checks before the first step built: the config as it will run and its session."""
    cfg: Config
    precision: PrecisionChoice
    session: Session
    probes: ProbeSession
    ckpt: Checkpoint | None  # the checkpoint a resume continues from
    changes: dict[str, list]  # resumable fields the resume changes ({name: [was, now]})
    loggers: MultiLogger | None = None  # `train(loggers=)`: where the metrics lines are mirrored (as_logger)


def check_start(cfg: Config, out: str, overwrite: bool, resume: bool, ctx: Dist, initial_state: dict | None,
                lock_held: bool, loggers: MultiLogger | None = None) -> Start:
    """Everything that can fail before the first step; nothing here writes to `out`."""
    saved = load_run_config(out) if resume and os.path.exists(os.path.join(out, CONFIG_FILE)) else None
    cfg, precision = resolve_auto(cfg, ctx, saved)
    check_run_loggers(cfg)
    if ctx.is_main and not lock_held:
        check_not_in_use(out)
    check_run_dir(out, overwrite, resume, lock_free=False)
    ckpt = Checkpoint.load_run(out) if resume else None  # a damaged or foreign checkpoint fails here
    changes = check_resume_compatible(saved, cfg, ckpt.config, ckpt.config_digest, out) if ckpt and saved else {}
    if ckpt is not None and ckpt.world_size != ctx.world:
        raise ConfigError(f"the run was made with {ckpt.world_size} processes and is resumed with "
                          f"{ctx.world}; resume with the same number (the augmentation streams are per process)")
    s = build_session(cfg, ctx, initial_state)
    check_schedules(s)
    heldout = HeldoutProbe(s.model, s.test_set.images[:cfg.heldout_images].to(s.device), eval_input(cfg, s.augment),
                           cfg.heldout_every)
    return Start(cfg, precision, s, ProbeSession(s.model, cfg, ctx, heldout, s.view_threads), ckpt, changes, loggers)


def resolve_auto(cfg: Config, ctx: Dist, saved: Config | None) -> tuple[Config, PrecisionChoice]:
    """precision=auto → fp32 or bf16 for this machine (hardware.py), decided by rank 0 for all
    ranks (the run says which once it starts)."""
    # Rank 0 alone measures (the other ranks would compete with it for the cores), then tells them.
    choose = machine_precision if ctx.is_main else (lambda device: PrecisionChoice("fp32", "rank 0 decides"))
    _, choice = resolve_precision(cfg, pick_device(cfg.device, ctx), saved, choose)
    choice = gather_objects(ctx, choice)[0]
    return dataclasses.replace(cfg, precision=choice.precision), choice


def check_schedules(s: Session) -> None:
    """The lr and τ schedules at the first and last step, so a value they cannot take ends the
    start in one line instead of step N of the run."""
    for step in sorted({0, max(0, s.total_steps - 1)}):
        try:
            lr = s.cfg.scaled_lr * lr_factor(s.cfg, step, s.schedule_steps, s.steps_per_epoch)
            tau = ema_tau(s.cfg, step, s.schedule_steps)
        except (ArithmeticError, ValueError) as e:
            lr, tau, why = math.nan, math.nan, f"{type(e).__name__}: {e}"
        else:
            why = f"lr {lr:.4g}, tau {tau:.4g}"
        if not (math.isfinite(lr) and math.isfinite(tau)):
            raise ConfigError(f"the lr / tau schedule cannot be computed at step {step} ({why}); check lr, "
                              "batch_size, warmup_epochs, epochs and max_steps")


def finished_summary(out: str, st: Start) -> dict[str, Any] | None:
    """The summary of a run that has already reached its last step (a resume then changes nothing)."""
    path = os.path.join(out, "summary.json")
    if st.ckpt is None or not os.path.exists(path) or st.ckpt.step < st.session.total_steps:
        return None
    with open_input(path) as f:
        summary = json.load(f)
    if st.session.ctx.is_main:
        print(f"siamdyn: {out} already finished at step {summary['steps']}; nothing to resume (raise epochs or "
              "max_steps with --set to train on)", file=sys.stderr)
    return summary


def begin(st: Start, out: str) -> tuple[Progress, RunLog]:
    """Inside RunStart: the checkpoint's state restored (or config.yaml written) and the logs
    opened. On a resume the files change last (metric lines a killed run wrote past its
    checkpoint dropped, config.yaml updated with the resumable changes), once nothing else can fail."""
    s, ckpt, run = st.session, st.ckpt, Progress()
    if ckpt is not None:
        ckpt.restore(s.model, s.optimizer, s.aug_gen, s.ctx.rank)
        st.probes.load_state_dict(ckpt.probes)
        run.step, run.knn, run.elapsed_before = ckpt.step, ckpt.knn, ckpt.elapsed_s
    if not s.ctx.is_main:
        return run, NullLog()
    if ckpt is None:
        write_config(out, st.cfg, resolved={"precision": st.precision.reason, "compile": s.compile_reason,
                                            "parallel_views": s.views_reason, "rank_every": st.probes.rank_every})
    else:
        truncate_metrics(out, run.step)  # before the log opens: it replaces the file
    log = run_log(MetricsLog(os.path.join(out, METRICS_FILE)), st.cfg, out,
                  resume_step=run.step if ckpt is not None else None, loggers=st.loggers)
    if st.changes:
        update_config(out, st.cfg)
    return run, log
