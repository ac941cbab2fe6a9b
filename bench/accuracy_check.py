"""Accuracy must not pay for speed: the same fmnist-small run (simsiam,
same seeds, ≥ 2 epochs, kNN on the full 60 000 / 10 000 after each epoch) under each speed
setting, side by side, with mean ± std over seeds when there are several.

    python bench/accuracy_check.py --device cpu --variants fp32-nchw,fp32-channels-last --seeds 0,1,2
                                   --out bench/results/accuracy_cpu.md
"""
from __future__ import annotations

import argparse
import os
import statistics

from _common import emit, finished_summary, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.runs import load_run_config  # noqa: E402
from siamdyn.train import train  # noqa: E402

VARIANTS = {
    "fp32-nchw": dict(precision="fp32", channels_last="off"),
    "fp32-channels-last": dict(precision="fp32", channels_last="on"),
    "bf16-channels-last": dict(precision="bf16", channels_last="on"),
}


def reusable_summary(run_dir: str, cfg: Config) -> dict | None:
    """The summary of a finished run in `run_dir` trained with exactly `cfg`, else None."""
    s = finished_summary(run_dir)
    return s if s is not None and load_run_config(run_dir) == cfg else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--variants", default="fp32-nchw,fp32-channels-last")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--seeds", default="0", help="comma-separated seeds, each run under every variant")
    p.add_argument("--runs", default="runs/accuracy_check")
    p.add_argument("--out")
    p.add_argument("--reuse", action="store_true",
                   help="take finished runs whose config.yaml equals this one from --runs instead of training again")
    args = p.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    variants = args.variants.split(",")
    rows, final = [], {name: [] for name in variants}
    for seed in seeds:  # seed-major: an interrupted run still has every variant for the first seeds
        for name in variants:
            cfg = Config.from_preset("simsiam", {"device": args.device, "seed": seed, "epochs": args.epochs,
                                                 **VARIANTS[name]})
            out = os.path.join(args.runs, f"{args.device}-{name}-seed{seed}")
            s = reusable_summary(out, cfg) if args.reuse else None
            reused = " (reused)" if s else ""
            s = s or train(cfg, out, overwrite=True, progress=False)
            final[name].append(s["knn"][-1]["knn_acc"])
            accs = " | ".join(f"{k['knn_acc']:.2f}" for k in s["knn"])
            rows.append(f"| {name}{reused} | {seed} | {accs} | {s['wall_time_s']:.0f} |")
            print(rows[-1], flush=True)
    summary = []
    if len(seeds) > 1:
        base = statistics.mean(final[variants[0]])
        summary = ["", f"| variant | final kNN, mean ± std over {len(seeds)} seeds (%) | vs {variants[0]} (points) |",
                   "|---|---|---|"]
        summary += [f"| {name} | {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f} | "
                    f"{statistics.mean(v) - base:+.2f} |" for name, v in final.items()]
    head = " | ".join(f"kNN after epoch {e + 1} (%)" for e in range(args.epochs))
    emit([*header("Accuracy check: speed settings vs the fp32 NCHW baseline", args.device),
          "- simsiam, fmnist-small defaults (width 16, batch 256, SGD lr 0.06, cosine); weighted kNN "
          "k=200 on all 60 000 / 10 000", "",
          f"| variant | seed | {head} | wall time (s) |", "|---" * (args.epochs + 3) + "|", *rows, *summary], args.out)


if __name__ == "__main__":
    main()
