"""Accuracy must not pay for speed (issue 6, item 3): the same fmnist-small run (simsiam,
seed 0, ≥ 2 epochs, kNN on the full 60 000 / 10 000 after each epoch) under each speed
setting, side by side.

    python bench/accuracy_check.py --device cpu --variants fp32-nchw,fp32-channels-last --out bench/results/accuracy_cpu.md
"""
from __future__ import annotations

import argparse
import os

from _common import emit, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.train import train  # noqa: E402

VARIANTS = {
    "fp32-nchw": dict(precision="fp32", channels_last="off"),
    "fp32-channels-last": dict(precision="fp32", channels_last="on"),
    "bf16-channels-last": dict(precision="bf16", channels_last="on"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="fp32-nchw,fp32-channels-last")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--runs", default="runs/accuracy_check")
    p.add_argument("--out")
    args = p.parse_args()
    rows = []
    for name in args.variants.split(","):
        cfg = Config.from_preset("simsiam", {"device": args.device, "seed": 0, "epochs": args.epochs, **VARIANTS[name]})
        s = train(cfg, os.path.join(args.runs, f"{args.device}-{name}"), overwrite=True, progress=False)
        accs = " | ".join(f"{k['knn_acc']:.2f}" for k in s["knn"])
        rows.append(f"| {name} | {accs} | {s['wall_time_s']:.0f} |")
        print(rows[-1], flush=True)
    head = " | ".join(f"kNN after epoch {e + 1} (%)" for e in range(args.epochs))
    emit([*header("Accuracy check: speed settings vs the fp32 NCHW baseline", args.device),
                      "- simsiam, fmnist-small defaults (width 16, batch 256, SGD lr 0.06, cosine), seed 0; weighted kNN "
                      "k=200 on all 60 000 / 10 000", "",
                      f"| variant | {head} | wall time (s) |", "|---" * (args.epochs + 2) + "|", *rows], args.out)


if __name__ == "__main__":
    main()
