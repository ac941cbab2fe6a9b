"""Reference points every trained encoder must beat: kNN on raw pixels and on a
random-init encoder (the "deep image prior" of docs/seed.md §5)."""
from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from siamdyn.config import Config
from siamdyn.data import channel_stats
from siamdyn.eval import encoder_features, euclidean_knn, linear_probe, weighted_knn
from siamdyn.methods import SiameseMethod
from siamdyn.runtime import eval_input, load_data, make_augment, setup_torch


def run_baseline(cfg: Config, inits: tuple[str, ...] = ("kaiming",), linear_epochs: int = 0,
                 init_seeds: int = 1) -> dict[str, Any]:
    """Weighted kNN (k, T of cfg) and plain euclidean 5-NN on raw pixels, and weighted kNN
    of random-init encoders with the given init schemes (and, for linear_epochs > 0, a linear
    probe of them, as `siamdyn probe` runs one on a trained backbone). Accuracies in %.
    With init_seeds > 1 each random-init reading is the mean over the draws cfg.seed,
    cfg.seed + 1, …, with its sample standard deviation (`…_sd`) and the draws (`…_by_seed`):
    one draw varies by a few points, as much as the effects it is a reference for."""
    if init_seeds < 1:
        raise ValueError(f"init_seeds={init_seeds} must be at least 1")
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
    features = eval_input(cfg, make_augment(cfg, mean, std, device))
    for init in inits:
        draws: dict[str, list[float]] = {"weighted_knn": [], "linear": []}
        for seed in range(cfg.seed, cfg.seed + init_seeds):
            torch.manual_seed(seed)
            model = SiameseMethod(cfg.replace(init=init, seed=seed), in_channels=train.shape[0])
            model = model.to(device, memory_format=cfg.memory_format).eval()
            bank, queries = encoder_features(model.backbone, train.images, test.images, features, device)
            draws["weighted_knn"].append(weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k,
                                                      cfg.knn_temperature, num_classes=len(train.classes)))
            if linear_epochs:
                probe = linear_probe(bank, train.labels, queries, test.labels, epochs=linear_epochs, seed=seed)
                draws["linear"].append(probe["linear_test_acc"])
        for name, values in draws.items():
            if values:
                result.update(summarise_draws(f"random_init_{init}_{name}", values))
    result["wall_time_s"] = time.perf_counter() - t0
    return result


def summarise_draws(key: str, values: list[float]) -> dict[str, Any]:
    """`key`: the mean of the draws; with more than one, `key_sd` (sample SD) and `key_by_seed`."""
    out: dict[str, Any] = {key: statistics.fmean(values)}
    if len(values) > 1:
        out[f"{key}_sd"] = statistics.stdev(values)
        out[f"{key}_by_seed"] = values
    return out
