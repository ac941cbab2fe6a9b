"""`siamdyn probe RUN`: kNN and a linear probe on the frozen backbone of a finished run."""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import torch

from siamdyn.checkpoint import Checkpoint, load_weights
from siamdyn.data import BatchAugment, ImageData
from siamdyn.eval import encoder_features, euclidean_knn, linear_probe, weighted_knn
from siamdyn.methods import SiameseMethod
from siamdyn.runs import RunLock, atomic_write_text, load_run_config
from siamdyn.runtime import eval_input, load_data, make_augment, setup_torch


def load_trained(run_dir: str) -> tuple[Any, SiameseMethod, BatchAugment, ImageData, ImageData, torch.device, int]:
    """(config, model in eval mode, the run's augmentation, train split, test split, device, step)."""
    cfg = load_run_config(run_dir)
    device = setup_torch(cfg)
    ckpt = Checkpoint.load_run(run_dir, device)
    train, test = load_data(cfg)
    model = SiameseMethod(cfg, in_channels=train.shape[0])
    load_weights(model, ckpt.model)
    model = model.to(device, memory_format=cfg.memory_format).eval()
    return cfg, model, make_augment(cfg, ckpt.data_mean, ckpt.data_std, device), train, test, device, ckpt.step


def evaluates_in_bf16(cfg, device: torch.device) -> bool:
    """A bf16 run is evaluated in bf16 where this machine runs bf16 natively, else in fp32
    (emulated bf16 would be several times slower for features that agree to < 0.1 point)."""
    from siamdyn.hardware import machine_precision
    return cfg.precision == "bf16" and machine_precision(device).precision == "bf16"


def evaluate_run(run_dir: str, epochs: int = 30, lock_held: bool = False) -> dict[str, Any]:
    """kNN and a linear probe of the run's backbone, into RUN/eval.json. The run's lock is held
    throughout: a run that a trainer is writing is refused (its checkpoint is about to change,
    and eval.json would describe a step the run has left), and no trainer starts meanwhile.
    `lock_held`: the caller holds it already (the experiment runner probes the run it trained)."""
    load_run_config(run_dir)  # a folder that is not a run is refused before the lock is taken in it
    with contextlib.nullcontext() if lock_held else RunLock(run_dir, then="and probe it again"):
        return _evaluate(run_dir, epochs)


def _evaluate(run_dir: str, epochs: int) -> dict[str, Any]:
    cfg, model, augment, train, test, device, step = load_trained(run_dir)
    t0 = time.perf_counter()
    bank, queries = encoder_features(model.backbone, train.images, test.images, eval_input(cfg, augment), device,
                                     bf16=evaluates_in_bf16(cfg, device))
    t_feat = time.perf_counter() - t0
    knn = lambda k: weighted_knn(bank, train.labels, queries, test.labels, k, cfg.knn_temperature,  # noqa: E731
                                 num_classes=len(train.classes))
    # The protocols `siamdyn baseline` applies to raw pixels, so the two compare like for
    # like: its 5-NN (euclidean, majority vote) is the strongest raw-pixel number.
    by_k = {k: knn(k) for k in sorted({5, 20, 200, cfg.knn_k})}
    result = {"run": run_dir, "step": step, "knn_acc": by_k[cfg.knn_k], "knn_weighted_by_k": by_k,
              "knn5_euclidean_acc": euclidean_knn(bank, train.labels, queries, test.labels, k=5),
              **linear_probe(bank, train.labels, queries, test.labels, epochs=epochs, seed=cfg.seed),
              "feature_time_s": t_feat, "probe_epochs": epochs}
    atomic_write_text(os.path.join(run_dir, "eval.json"), json.dumps(result, indent=2))
    return result
