"""The training loop, top to bottom: data → views → method → loss → step → metrics.

One call, `train(cfg, out)`, makes a run directory (runs.py) and returns its summary.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from typing import Any

import torch
from tqdm import tqdm

from siamdyn.config import Config
from siamdyn.data import AugmentParams, BatchAugment, ImageData, channel_stats, load_split
from siamdyn.errors import ConfigError, DataError, SiamdynError, TrainingDiverged
from siamdyn.eval import encoder_features, weighted_knn
from siamdyn.methods import SiameseMethod, ema_tau
from siamdyn.probes.collapse import CollapseDetector, collapse_metrics
from siamdyn.probes.gradients import gradient_split, module_speeds, snapshot
from siamdyn.probes.spectrum import predictor_spectrum
from siamdyn.runs import (CKPT_FILE, MetricsLog, atomic_save, atomic_write_text, check_resume_compatible,
                          load_run_config, prepare_run_dir, write_config)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or auto")
    return torch.device(name)


def setup_torch(cfg: Config) -> torch.device:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    return pick_device(cfg.device)


def load_data(cfg: Config) -> tuple[ImageData, ImageData]:
    root = cfg.resolved_data_dir()
    train = load_split(cfg.dataset, root, "train", cfg.image_size).balanced_subset(cfg.limit)
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
                 cfg: Config, device: torch.device) -> float:
    was_training = model.training
    model.eval()
    bank, queries = encoder_features(model.backbone, train.images, test.images, eval_input(cfg, augment), device)
    model.train(was_training)
    return weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k, cfg.knn_temperature,
                        num_classes=len(train.classes))


class _StopRequested(Exception):
    pass


def train(cfg: Config, out: str, overwrite: bool = False, resume: bool = False, progress: bool = True,
          initial_state: dict | None = None, desc: str | None = None) -> dict[str, Any]:
    """Train `cfg` into run directory `out`; returns the summary (also in summary.json)."""
    if resume and os.path.exists(os.path.join(out, "config.yaml")):
        check_resume_compatible(load_run_config(out), cfg)
    prepare_run_dir(out, overwrite, resume)
    device = setup_torch(cfg)
    train_set, test_set = load_data(cfg)
    mean, std = channel_stats(train_set.images)
    augment = BatchAugment(AugmentParams.from_config(cfg), mean.to(device), std.to(device))
    model = SiameseMethod(cfg, in_channels=train_set.shape[0])
    if initial_state is not None:
        model.load_state_dict(initial_state)
    model = model.to(device, memory_format=cfg.memory_format)
    groups = model.param_groups()
    optimizer = torch.optim.SGD([{k: v for k, v in g.items()} for g in groups], lr=cfg.scaled_lr,
                                momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(train_set) // cfg.batch_size  # drop the last partial batch (BN)
    # The lr and τ schedules span `epochs`; max_steps only stops early (so a run cut short
    # by max_steps follows the same trajectory as the full one). epochs=0: max_steps is all.
    schedule_steps = cfg.epochs * steps_per_epoch if cfg.epochs else cfg.max_steps
    total_steps = min(schedule_steps, cfg.max_steps) if cfg.max_steps else schedule_steps
    images = train_set.images.to(device)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    step, knn_history = 0, []
    detector = CollapseDetector(cfg.proj_dim, rank_floor=cfg.collapse_rank_floor)

    if resume:
        ckpt = torch.load(os.path.join(out, CKPT_FILE), map_location=device, weights_only=False)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        aug_gen.set_state(ckpt["aug_rng"].to(aug_gen.get_state().device) if device.type == "cpu" else ckpt["aug_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, knn_history = ckpt["step"], ckpt["knn"]
        detector.step, detector.reason = ckpt["collapse_step"], ckpt.get("collapse_reason")
    else:
        write_config(out, cfg)

    def save_checkpoint() -> None:
        atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                     "aug_rng": aug_gen.get_state(), "torch_rng": torch.get_rng_state(), "knn": knn_history,
                     "collapse_step": detector.step, "collapse_reason": detector.reason, "config": cfg.to_dict(),
                     "data_mean": mean, "data_std": std}, os.path.join(out, CKPT_FILE))
        log.sync()

    # SIGTERM (and Ctrl-C) end the run at a step boundary with a checkpoint.
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    log = MetricsLog(os.path.join(out, "metrics.jsonl"))
    bar = tqdm(total=total_steps, initial=step, disable=not progress, desc=desc or cfg.preset, unit="step",
               dynamic_ncols=True, leave=True)
    t_start, t_last, images_seen = time.perf_counter(), time.perf_counter(), 0
    probe_time, stopped_on_collapse = 0.0, False
    model.train()
    try:
        while step < total_steps:
            epoch, batch_in_epoch = divmod(step, steps_per_epoch)
            # The data order depends only on (seed, epoch), so a resumed run sees the same batches.
            order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
            for b in range(batch_in_epoch, steps_per_epoch):
                if step >= total_steps:
                    break
                if stop["flag"]:
                    raise _StopRequested
                x = images[order[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(device)]
                views, xbar = make_views(cfg, augment, x, aug_gen)
                factor = lr_factor(cfg, step, schedule_steps, steps_per_epoch)
                for group in optimizer.param_groups:
                    group["lr"] = cfg.scaled_lr * group["lr_scale"] * (1.0 if group["fixed_lr"] else factor)
                probe = cfg.probe_every and step % cfg.probe_every == 0
                if probe:  # on the same views, before the step; restores BN buffers
                    t_probe = time.perf_counter()
                    probe_record = {"step": step + 1, **gradient_split(model, views, xbar)}
                    probe_time += time.perf_counter() - t_probe
                result = model(views, xbar)
                loss = result.loss
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"loss became {loss.item()} at step {step}; the last good checkpoint is in "
                                           f"{os.path.join(out, CKPT_FILE)} — lower lr and start again")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                t_probe = time.perf_counter()
                before = snapshot(model) if probe else None
                probe_time += time.perf_counter() - t_probe
                optimizer.step()
                if probe:
                    t_probe = time.perf_counter()
                    probe_record.update(module_speeds(model, before))
                    if cfg.predictor == "linear":
                        probe_record.update(predictor_spectrum(model.predictor.weight, torch.cat(result.z)))
                    probe_time += time.perf_counter() - t_probe
                    log.write({**probe_record, "probe_time_s": probe_time})
                tau = ema_tau(cfg, step, schedule_steps)
                model.update_target(tau)
                step += 1
                images_seen += len(x)
                if step % cfg.log_every == 0 or step == total_steps:
                    now = time.perf_counter()
                    rate = images_seen / max(1e-9, now - t_last)
                    t_last, images_seen = now, 0
                    metrics = collapse_metrics(result.z, result.p, result.features[0])
                    fired = detector.update(step, metrics)
                    log.write({"step": step, "epoch": step / steps_per_epoch, "loss": loss.item(), **metrics,
                               "lr": cfg.scaled_lr * factor, "tau": tau, "images_per_s": rate, "time_s": now - t_start})
                    bar.set_postfix(loss=f"{loss.item():.3f}", std=f"{metrics['z_std'] * math.sqrt(cfg.proj_dim):.2f}/√d",
                                    rank=f"{metrics['z_erank']:.1f}", img_s=f"{rate:.0f}",
                                    collapsed=f"@{detector.step}" if detector.step else "no", refresh=False)
                    if fired:
                        bar.write(f"[{desc or cfg.preset}] collapse detected at step {step}: {detector.reason}")
                        if cfg.stop_on_collapse:
                            stopped_on_collapse = True
                            total_steps = step  # end here: the kNN and checkpoint below still run
                bar.update(1)
                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    save_checkpoint()
            finished_epoch = step // steps_per_epoch
            at_end = step >= total_steps
            if (cfg.knn_every and finished_epoch % cfg.knn_every == 0 and step % steps_per_epoch == 0) or at_end:
                acc = knn_accuracy(model, augment, train_set, test_set, cfg, device)
                knn_history.append({"step": step, "epoch": step / steps_per_epoch, "knn_acc": acc,
                                    "time_s": time.perf_counter() - t_start})
                log.write({"step": step, "epoch": step / steps_per_epoch, "knn_acc": acc})
                bar.write(f"[{desc or cfg.preset}] epoch {step / steps_per_epoch:.2f}: kNN {acc:.2f} %")
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
    summary = {"preset": cfg.preset, "steps": step, "epochs": step / max(1, steps_per_epoch),
               "final_knn_acc": knn_history[-1]["knn_acc"] if knn_history else None, "knn": knn_history,
               "collapse_step": detector.step, "collapse_reason": detector.reason,
               "collapse_threshold": detector.threshold, "stopped_on_collapse": stopped_on_collapse,
               "probe_time_s": probe_time, "wall_time_s": time.perf_counter() - t_start}
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(summary, indent=2))
    return summary
