"""The training loop, top to bottom: data → views → method → loss → step → metrics.

One call, `train(cfg, out)`, makes a run directory (runs.py) and returns its summary.
"""
from __future__ import annotations

import json
import math
import os
import random
import signal
import time
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from siamdyn.config import Config
from siamdyn.data import AugmentParams, BatchAugment, ImageData, channel_stats, load_split
from siamdyn.distributed import (Dist, any_rank, check_batch, gather_objects, gather_rows, init_distributed,
                                 mean_over_ranks, rank_seed, shutdown_distributed, sync_batchnorm, weights_digest)
from siamdyn.errors import ConfigError, DataError, SiamdynError, TrainingDiverged
from siamdyn.eval import encoder_features, weighted_knn
from siamdyn.methods import SiameseMethod, ema_tau
from siamdyn.probes.collapse import CollapseDetector, collapse_metrics
from siamdyn.probes.session import StepProbes
from siamdyn.runs import (CKPT_FILE, MetricsLog, NullLog, atomic_save, atomic_write_text, check_resume_compatible,
                          check_run_dir, load_checkpoint, load_run_config, prepare_run_dir, truncate_metrics, write_config)


def pick_device(name: str, ctx: Dist = Dist()) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device("cuda", ctx.local_rank) if name == "cuda" else torch.device(name)


def setup_torch(cfg: Config, ctx: Dist = Dist()) -> torch.device:
    threads = cfg.threads
    if not threads and ctx.enabled:  # share the cores of this machine among its processes
        threads = max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world)))
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    else:  # let cuDNN pick the fastest convolution for our fixed shapes (no effect on CPU)
        torch.backends.cudnn.benchmark = True
    return pick_device(cfg.device, ctx)


def build_optimizer(model: SiameseMethod, cfg: Config) -> torch.optim.Optimizer:
    groups = model.param_groups()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.scaled_lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class LARS(torch.optim.SGD):
    """LARS (You et al. 2017) as BYOL uses it: SGD with momentum whose step for each weight
    matrix is scaled by the trust ratio η‖w‖ / ‖∇w + λw‖. Biases and BatchNorm parameters
    (1-d) get plain SGD without weight decay, as in BYOL."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, eta: float = 0.001):
        self.eta = eta
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        self.lars_weight_decay = weight_decay

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 — torch.optim's signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.dim() == 1:
                    continue
                p.grad.add_(p, alpha=self.lars_weight_decay)
                w, g = p.norm(), p.grad.norm()
                trust = torch.where((w > 0) & (g > 0), self.eta * w / g, torch.ones_like(w))
                p.grad.mul_(trust)
        return super().step(closure)


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, factor: float) -> None:
    """Scheduled groups follow `factor`; `fixed_lr` groups (SimSiam's predictor) do not."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.scaled_lr * group["lr_scale"] * (1.0 if group["fixed_lr"] else factor)


def epoch_order(cfg: Config, n: int, epoch: int) -> torch.Tensor:
    """The data order depends only on (seed, epoch), so a resumed run sees the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))


def rank_batch(order: torch.Tensor, b: int, batch_size: int, ctx: Dist = Dist()) -> torch.Tensor:
    """This rank's slice of global batch b: the ranks together see what one process would."""
    local = batch_size // ctx.world
    start = b * batch_size + ctx.rank * local
    return order[start:start + local]


def load_data(cfg: Config) -> tuple[ImageData, ImageData]:
    root = cfg.resolved_data_dir()
    train = load_split(cfg.dataset, root, "train", cfg.image_size, synthetic_n=cfg.limit).balanced_subset(cfg.limit)
    test = load_split(cfg.dataset, root, "test", cfg.image_size).balanced_subset(cfg.test_limit)
    if train.shape != test.shape:
        raise DataError(f"train images are {train.shape} but test images are {test.shape}; both splits need one shape")
    if min(train.shape[1:]) < 8:
        raise DataError(f"images of {train.shape[1]}x{train.shape[2]} are too small for the ResNet (need >= 8x8); resize them with image_size")
    if cfg.batch_size > len(train):
        raise ConfigError(f"batch_size={cfg.batch_size} is larger than the {len(train)} training images; lower batch_size or raise limit")
    return train, test


def lr_factor(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up for `warmup_epochs`, then a cosine from 1 to 0 over the rest."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_views(cfg: Config, augment: BatchAugment, x: torch.Tensor, g: torch.Generator) -> tuple[list, Any]:
    """The two online views and, for `view_mean`, x̄ = the pixel mean of K more (eq. 10)."""
    fmt = cfg.memory_format
    views = [augment(x, g).contiguous(memory_format=fmt), augment(x, g).contiguous(memory_format=fmt)]
    xbar = None
    if cfg.target == "view_mean":
        xbar = torch.stack([augment(x, g) for _ in range(cfg.mean_views)]).mean(0).contiguous(memory_format=fmt)
    return views, xbar


def eval_input(cfg: Config, augment: BatchAugment):
    """Un-augmented, normalised input in the model's memory format."""
    return lambda x: augment.normalize(x).contiguous(memory_format=cfg.memory_format)


@torch.no_grad()
def knn_accuracy(model: SiameseMethod, augment: BatchAugment, train: ImageData, test: ImageData,
                 cfg: Config, device: torch.device, ctx: Dist = Dist()) -> float | None:
    """Weighted kNN of the backbone features. Under DDP each rank embeds its share of the
    images, the features are gathered and rank 0 votes (other ranks get None)."""
    was_training = model.training
    model.eval()
    shares = [torch.tensor_split(x, ctx.world) for x in (train.images, test.images)]
    bank, queries = encoder_features(model.backbone, shares[0][ctx.rank], shares[1][ctx.rank],
                                     eval_input(cfg, augment), device)
    bank, queries = (gather_rows(ctx, f, [len(s) for s in share]) for f, share in zip((bank, queries), shares))
    model.train(was_training)
    if not ctx.is_main:
        return None
    return weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k, cfg.knn_temperature,
                        num_classes=len(train.classes))


def time_to_accuracy(knn_history: list[dict], levels: list[float]) -> dict[str, Any]:
    """For each kNN level (%), the wall time and step of the first evaluation at or above it (None: never)."""
    out = {}
    for level in levels:
        hit = next((h for h in knn_history if h["knn_acc"] is not None and h["knn_acc"] >= level), None)
        out[f"{level:g}"] = {"time_s": hit["time_s"], "step": hit["step"]} if hit else None
    return out


class _StopRequested(Exception):
    pass


def train(cfg: Config, out: str, overwrite: bool = False, resume: bool = False, progress: bool = True,
          initial_state: dict | None = None, desc: str | None = None) -> dict[str, Any]:
    """Train `cfg` into run directory `out`; returns the summary (also in summary.json).
    Under torchrun every rank calls this; rank 0 alone writes to `out`."""
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, out, overwrite, resume, progress, initial_state, desc, ctx)
    finally:
        shutdown_distributed()


def _train(cfg: Config, out: str, overwrite: bool, resume: bool, progress: bool, initial_state: dict | None,
           desc: str | None, ctx: Dist) -> dict[str, Any]:
    if resume and os.path.exists(os.path.join(out, "config.yaml")):
        check_resume_compatible(load_run_config(out), cfg)
    check_run_dir(out, overwrite, resume)
    local_batch = check_batch(ctx, cfg.batch_size)
    device = setup_torch(cfg, ctx)
    train_set, test_set = load_data(cfg)  # bad data fails here, before `out` is touched
    if ctx.is_main:
        prepare_run_dir(out, overwrite, resume)
    mean, std = channel_stats(train_set.images)
    augment = BatchAugment(AugmentParams.from_config(cfg), mean.to(device), std.to(device))
    model = SiameseMethod(cfg, in_channels=train_set.shape[0])
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model = model.to(device, memory_format=cfg.memory_format)
    net = model  # what the training step calls: the model, or its DDP wrapper
    if ctx.enabled:
        if cfg.sync_bn:
            model = sync_batchnorm(model, device)
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # the probes and checkpoints keep using `model`, the uncompiled module
        net = torch.compile(net)
    optimizer = build_optimizer(model, cfg)
    steps_per_epoch = len(train_set) // cfg.batch_size  # drop the last partial batch (BN)
    # The lr and τ schedules span `epochs`; max_steps only stops early (so a run cut short
    # by max_steps follows the same trajectory as the full one). epochs=0: max_steps is all.
    schedule_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps
    images = train_set.images.to(device)
    aug_gen = torch.Generator(device=device).manual_seed(rank_seed(cfg.seed, ctx.rank))  # a stream per rank
    step, knn_history, elapsed_before = 0, [], 0.0
    detector = CollapseDetector(cfg.proj_dim, rank_floor=cfg.collapse_rank_floor, patience=cfg.collapse_patience)

    if resume:
        ckpt = load_checkpoint(out, device)
        if ckpt.get("world_size", 1) != ctx.world:
            raise ConfigError(f"the run was made with {ckpt.get('world_size', 1)} processes and is resumed with "
                              f"{ctx.world}; resume with the same number (the augmentation streams are per process)")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        aug_rng = ckpt.get("aug_rng_ranks", [ckpt["aug_rng"]])[ctx.rank]
        aug_gen.set_state(aug_rng.to(aug_gen.get_state().device) if device.type == "cpu" else aug_rng)
        torch.set_rng_state(ckpt["torch_rng"])
        if "python_rng" in ckpt:  # absent in checkpoints written before 0.2
            random.setstate(ckpt["python_rng"])
            np.random.set_state(ckpt["numpy_rng"])
        step, knn_history = ckpt["step"], ckpt["knn"]
        elapsed_before = ckpt.get("elapsed_s", 0.0)  # wall time of the earlier sessions of this run
        detector.step, detector.reason = ckpt["collapse_step"], ckpt.get("collapse_reason")
        if ctx.is_main:
            truncate_metrics(out, step)  # lines a killed run wrote after its last checkpoint
    elif ctx.is_main:
        write_config(out, cfg)

    def save_checkpoint() -> None:
        """Every rank joins (its augmentation stream and a digest of its weights are gathered);
        rank 0 writes. Ranks that disagree on the weights stop the run: DDP went wrong."""
        aug_rngs = gather_objects(ctx, aug_gen.get_state())
        digests = gather_objects(ctx, weights_digest(model, buffers=cfg.sync_bn)) if ctx.enabled else None
        if digests and len(set(digests)) > 1:
            raise SiamdynError(f"the {ctx.world} processes hold different weights at step {step}; "
                               "the checkpoint was not written — report this with the config")
        if ctx.is_main:
            atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "aug_rng": aug_rngs[0], "aug_rng_ranks": aug_rngs, "world_size": ctx.world,
                         "rank_digests": digests, "torch_rng": torch.get_rng_state(),
                         "python_rng": random.getstate(), "numpy_rng": np.random.get_state(), "knn": knn_history,
                         "collapse_step": detector.step, "collapse_reason": detector.reason,
                         "elapsed_s": elapsed_before + time.perf_counter() - t_start, "config": cfg.to_dict(),
                         "data_mean": mean, "data_std": std}, os.path.join(out, CKPT_FILE))
            log.sync()

    # SIGTERM (and Ctrl-C) end the run at a step boundary with a checkpoint.
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    log = MetricsLog(os.path.join(out, "metrics.jsonl")) if ctx.is_main else NullLog()
    bar = tqdm(total=total_steps, initial=step, disable=not (progress and ctx.is_main), desc=desc or cfg.preset,
               unit="step", dynamic_ncols=True, leave=True)
    t_start, t_last, images_seen = time.perf_counter(), time.perf_counter(), 0
    probes = StepProbes(model, cfg.probe_every, ctx)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    stopped_on_collapse = False
    model.train()
    try:
        while step < total_steps:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            order = epoch_order(cfg, len(images), epoch)
            for b in range(batch_in_epoch, steps_per_epoch):
                if step >= total_steps:
                    break
                if any_rank(ctx, stop["flag"]):
                    raise _StopRequested
                x = images[rank_batch(order, b, cfg.batch_size, ctx).to(device)]
                views, xbar = make_views(cfg, augment, x, aug_gen)
                factor = lr_factor(cfg, step, schedule_steps, steps_per_epoch)
                set_lr(optimizer, cfg, factor)
                with autocast:
                    probes.before_step(step, views, xbar)  # on the same views, before the step
                    result = net(views, xbar)
                loss = mean_over_ranks(ctx, result.loss.detach())  # the global-batch loss
                optimizer.zero_grad(set_to_none=True)
                result.loss.backward()
                bad = model.nonfinite_gradient(loss)  # the step's one host sync: loss and gradients together
                if bad == "loss":
                    raise TrainingDiverged(f"loss became {loss.item()} at step {step + 1}; the last good checkpoint is in "
                                           f"{os.path.join(out, CKPT_FILE)} — lower lr and start again")
                if bad:
                    raise TrainingDiverged(f"the gradient became non-finite at step {step + 1}, first in {bad} "
                                           f"(loss {loss.item():.4g}); the last good checkpoint is in "
                                           f"{os.path.join(out, CKPT_FILE)} — lower lr (or predictor_lr_scale) and start again")
                probes.after_backward()
                optimizer.step()
                record = probes.after_step(result)
                if record:
                    log.write(record)
                tau = ema_tau(cfg, step, schedule_steps)
                model.update_target(tau)
                step += 1
                images_seen += len(x) * ctx.world
                fired = False
                if ctx.is_main and (step % cfg.log_every == 0 or step == total_steps):
                    now = time.perf_counter()
                    rate = images_seen / max(1e-9, now - t_last)
                    t_last, images_seen = now, 0
                    metrics = collapse_metrics(result.z, result.p, result.features[0])
                    fired = detector.update(step, metrics)
                    log.write({"step": step, "epoch": step / steps_per_epoch, "loss": loss.item(), **metrics,
                               "lr": cfg.scaled_lr * factor, "tau": tau, "images_per_s": rate,
                               "time_s": elapsed_before + now - t_start})
                    bar.set_postfix(loss=f"{loss.item():.3f}", std=f"{metrics['z_std'] * math.sqrt(cfg.proj_dim):.2f}/√d",
                                    rank=f"{metrics['z_erank']:.1f}", img_s=f"{rate:.0f}",
                                    collapsed=f"@{detector.step}" if detector.step else "no", refresh=False)
                    if fired:
                        bar.write(f"[{desc or cfg.preset}] collapse detected at step {step} (since step {detector.step}): "
                                  f"{detector.reason}")
                if cfg.stop_on_collapse and any_rank(ctx, fired):
                    stopped_on_collapse = True
                    total_steps = step  # end here: the kNN and checkpoint below still run
                bar.update(1)
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    save_checkpoint()
            finished_epoch = step // steps_per_epoch
            at_end = step >= total_steps
            if (cfg.knn_every and finished_epoch % cfg.knn_every == 0 and step % steps_per_epoch == 0) or at_end:
                acc = knn_accuracy(model, augment, train_set, test_set, cfg, device, ctx)
                knn_history.append({"step": step, "epoch": step / steps_per_epoch, "knn_acc": acc,
                                    "time_s": elapsed_before + time.perf_counter() - t_start})
                log.write({"step": step, "epoch": step / steps_per_epoch, "knn_acc": acc})
                if ctx.is_main:
                    crossings = time_to_accuracy(knn_history, cfg.knn_target_levels)
                    reached = [f"{lv} %" for lv, hit in crossings.items() if hit and hit["step"] == step]
                    bar.write(f"[{desc or cfg.preset}] epoch {step / steps_per_epoch:.2f}: kNN {acc:.2f} %"
                              + (f" — first at or above {', '.join(reached)} after {knn_history[-1]['time_s']:.0f} s"
                                 if reached else ""))
            save_checkpoint()
    except (KeyboardInterrupt, _StopRequested):
        save_checkpoint()
        bar.close()
        log.close()
        raise SiamdynError(f"stopped at step {step}; checkpoint saved — continue with "
                           f"`siamdyn train --out {out} --resume` (same preset and --set values)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        log.close()
    summary = {"preset": cfg.preset, "steps": step, "epochs": step / max(1, steps_per_epoch), "processes": ctx.world,
               "final_knn_acc": knn_history[-1]["knn_acc"] if knn_history else None, "knn": knn_history,
               "collapse_step": detector.step, "collapse_reason": detector.reason,
               "collapse_threshold": detector.threshold, "stopped_on_collapse": stopped_on_collapse,
               "time_to_knn": time_to_accuracy(knn_history, cfg.knn_target_levels),
               "probe_time_s": probes.seconds, "wall_time_s": elapsed_before + time.perf_counter() - t_start}
    if ctx.is_main:
        atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary
