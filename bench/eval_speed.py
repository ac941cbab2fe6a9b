"""Evaluation speed: feature extraction of fmnist's 70 000 images and the weighted kNN
(60 000 bank × 10 000 queries), timed side by side in one run.

    python bench/eval_speed.py [--device cuda] [--out bench/results/eval_cpu.md]

Extraction variants (same backbone, width 16, channels_last as in training):
  no_grad      the plain module under torch.no_grad (what siamdyn did before)
  fused        BatchNorm folded into the preceding convolutions (torch.fx)
  fused-bf16   the same under bf16 autocast (only where bf16 is fast: a GPU)
The features of each variant are compared with no_grad's (max relative difference) and the
kNN accuracy is computed from each, so a faster variant cannot silently change the number.
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import emit, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.data import AugmentParams, BatchAugment, channel_stats  # noqa: E402
from siamdyn.eval import extract_features, fused_for_inference, weighted_knn  # noqa: E402
from siamdyn.methods import SiameseMethod  # noqa: E402
from siamdyn.runtime import eval_input, load_data, setup_torch  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    args = p.parse_args()
    cfg = Config.from_preset("simsiam", {"device": args.device})
    device = setup_torch(cfg)
    train, test = load_data(cfg)
    mean, std = channel_stats(train.images)
    augment = BatchAugment(AugmentParams.from_config(cfg), mean.to(device), std.to(device))
    model = SiameseMethod(cfg, 1).to(device, memory_format=cfg.memory_format).eval()
    prepare = eval_input(cfg, augment)
    images = torch.cat([train.images, test.images])
    variants = {"no_grad": (model.backbone, False), "fused": (fused_for_inference(model.backbone), False)}
    if device.type == "cuda":
        variants["fused-bf16"] = (variants["fused"][0], True)
    rows, reference = [], None
    for name, (encoder, bf16) in variants.items():
        extract_features(encoder, images[:2048], prepare, device=device)  # warm-up
        t = time.perf_counter()
        feats = extract_features(encoder, images, prepare, device=device, bf16=bf16)
        seconds = time.perf_counter() - t
        reference = feats if reference is None else reference
        rel = float((feats - reference).abs().max() / reference.abs().max())
        t = time.perf_counter()
        acc = weighted_knn(feats[:len(train)], train.labels, feats[len(train):], test.labels, cfg.knn_k,
                           cfg.knn_temperature)
        knn_s = time.perf_counter() - t
        rows.append(f"| {name} | {seconds:.1f} | {len(images) / seconds:.0f} | {rel:.1e} | {knn_s:.2f} | {acc:.2f} |")
        print(rows[-1], flush=True)
    emit([*header("Evaluation speed", args.device),
                      "- random-init width-16 ResNet-18 (kaiming), fmnist 60 000 + 10 000 images, batch 1024; "
                      "weighted kNN k=200 T=0.1 on the extracted features", "",
                      "| extraction | seconds for 70 000 images | images/s | max rel. diff vs no_grad "
                      "| kNN seconds (60k × 10k) | kNN acc (%) |",
                      "|---|---|---|---|---|---|", *rows], args.out)


if __name__ == "__main__":
    main()
