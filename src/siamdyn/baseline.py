"""Reference points every trained encoder must beat: kNN on raw pixels and on a
random-init encoder (the "deep image prior" of docs/seed.md §5)."""
from __future__ import annotations

import time
from typing import Any

import torch

from siamdyn.config import Config
from siamdyn.data import channel_stats
from siamdyn.eval import encoder_features, euclidean_knn, linear_probe, weighted_knn
from siamdyn.methods import SiameseMethod
from siamdyn.runtime import eval_input, load_data, make_augment, setup_torch


def run_baseline(cfg: Config, inits: tuple[str, ...] = ("kaiming",), linear_epochs: int = 0) -> dict[str, Any]:
    """Weighted kNN (k, T of cfg) and plain euclidean 5-NN on raw pixels, and weighted kNN
    of random-init encoders with the given init schemes (and, for linear_epochs > 0, a linear
    probe of them, as `siamdyn probe` runs one on a trained backbone). Accuracies in %."""
    device = setup_torch(cfg)
    train, test = load_data(cfg)
    t0 = time.perf_counter()
    pix_train = train.images.flatten(1).float() / 255
    pix_test = test.images.flatten(1).float() / 255
    result: dict[str, Any] = {
        "dataset": cfg.dataset, "train_images": len(train), "test_images": len(test),
        "raw_pixels_weighted_knn": weighted_knn(pix_train, train.labels, pix_test, test.labels, cfg.knn_k,
                                                cfg.knn_temperature, num_classes=len(train.classes)),
        "raw_pixels_knn5_euclidean": euclidean_knn(pix_train, train.labels, pix_test, test.labels, k=5),
    }
    mean, std = channel_stats(train.images)
    augment = make_augment(cfg, mean, std, device)
    for init in inits:
        torch.manual_seed(cfg.seed)
        model = SiameseMethod(cfg.replace(init=init), in_channels=train.shape[0])
        model = model.to(device, memory_format=cfg.memory_format).eval()
        bank, queries = encoder_features(model.backbone, train.images, test.images, eval_input(cfg, augment), device)
        result[f"random_init_{init}_weighted_knn"] = weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k,
                                                                  cfg.knn_temperature, num_classes=len(train.classes))
        if linear_epochs:
            probe = linear_probe(bank, train.labels, queries, test.labels, epochs=linear_epochs, seed=cfg.seed)
            result[f"random_init_{init}_linear"] = probe["linear_test_acc"]
    result["wall_time_s"] = time.perf_counter() - t0
    return result
