"""`siamdyn probe RUN`: kNN and a linear probe on the frozen backbone of a finished run."""
from __future__ import annotations

import json
import os
import time
from typing import Any

import torch

from siamdyn.data import AugmentParams, BatchAugment
from siamdyn.errors import SiamdynError
from siamdyn.eval import encoder_features, euclidean_knn, linear_probe, weighted_knn
from siamdyn.methods import SiameseMethod
from siamdyn.runs import CKPT_FILE, atomic_write_text, load_run_config
from siamdyn.train import eval_input, load_data, setup_torch


def load_trained(run_dir: str) -> tuple[Any, SiameseMethod, BatchAugment, Any, Any, torch.device]:
    """(config, model in eval mode, the run's augmentation, train split, test split, device)."""
    cfg = load_run_config(run_dir)
    path = os.path.join(run_dir, CKPT_FILE)
    if not os.path.exists(path):
        raise SiamdynError(f"{path} does not exist; train the run first")
    device = setup_torch(cfg)
    ckpt = torch.load(path, map_location=device, weights_only=False)
    train, test = load_data(cfg)
    model = SiameseMethod(cfg, in_channels=train.shape[0])
    model.load_state_dict(ckpt["model"])
    model = model.to(device, memory_format=cfg.memory_format).eval()
    augment = BatchAugment(AugmentParams.from_config(cfg), ckpt["data_mean"].to(device), ckpt["data_std"].to(device))
    return cfg, model, augment, train, test, device


def evaluate_run(run_dir: str, epochs: int = 30) -> dict[str, Any]:
    cfg, model, augment, train, test, device = load_trained(run_dir)
    step = torch.load(os.path.join(run_dir, CKPT_FILE), map_location="cpu", weights_only=False)["step"]
    t0 = time.perf_counter()
    bank, queries = encoder_features(model.backbone, train.images, test.images, eval_input(cfg, augment), device)
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
