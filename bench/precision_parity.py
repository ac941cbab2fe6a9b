"""bf16 vs fp32, seed by seed: does bf16 autocast change what siamdyn measures?

    python bench/precision_parity.py --seeds 0,1,2 --epochs 2 --limit 20000
                                     --out bench/results/precision_parity_cpu.md

For each seed the same SimSiam run (width-16 ResNet-18, batch 256, the preset's recipe) is
trained under precision=fp32 and precision=bf16. Compared:
  - the final weighted kNN (k = 200) on the full test set, paired by seed;
  - the collapse instruments on a fixed held-out batch (std of z/‖z‖ and RankMe of z and p),
    the bf16 − fp32 gap against the seed-to-seed spread of the fp32 runs at the same steps;
  - evaluation precision: the bf16 run's kNN from bf16 features vs fp32 features of the
    same weights.
A figure of the instrument curves is written next to --out. On a CPU without bf16 units
bf16 is emulated (slow) but its numbers are still the ones to compare.
"""
from __future__ import annotations

import argparse
import os
import statistics

from _common import emit, finished_summary, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.eval import encoder_features, weighted_knn  # noqa: E402
from siamdyn.probe_run import load_trained  # noqa: E402
from siamdyn.runs import load_run_config, read_metrics  # noqa: E402
from siamdyn.runtime import eval_input  # noqa: E402
from siamdyn.train import train  # noqa: E402

INSTRUMENTS = ("heldout/z_std", "heldout/z_erank", "heldout/p_erank")


def run(seed: int, precision: str, args: argparse.Namespace) -> str:
    cfg = Config.from_preset("simsiam", {"seed": seed, "epochs": args.epochs, "limit": args.limit,
                                         "precision": precision, "heldout_every": args.heldout_every,
                                         "heldout_images": 2000, "probe_every": 0})
    out = os.path.join(args.runs, f"{precision}-seed{seed}")
    if not (finished_summary(out) and load_run_config(out) == cfg):
        train(cfg, out, overwrite=True, progress=False)
    return out


def curves(out: str) -> dict[str, dict[int, float]]:
    rows = [r for r in read_metrics(out) if INSTRUMENTS[0] in r]
    return {k: {r["step"]: r[k] for r in rows} for k in INSTRUMENTS}


def eval_precision_gap(out: str) -> tuple[float, float]:
    """(kNN from fp32 features, kNN from bf16 features) of one run's final weights."""
    cfg, model, augment, train_set, test_set, device, _ = load_trained(out)
    accs = []
    for bf16 in (False, True):
        bank, queries = encoder_features(model.backbone, train_set.images, test_set.images, eval_input(cfg, augment),
                                         device, bf16=bf16)
        accs.append(weighted_knn(bank, train_set.labels, queries, test_set.labels, cfg.knn_k, cfg.knn_temperature,
                                 num_classes=len(train_set.classes)))
    return accs[0], accs[1]


def instrument_lines(c: dict[str, list[dict]]) -> list[str]:
    """Per instrument: mean |bf16 − fp32| over seeds and steps vs the fp32 seed-to-seed std."""
    lines = ["", "| instrument (held-out batch) | mean abs(bf16 − fp32), paired by seed | fp32 std over seeds | "
             "ratio |", "|---|---|---|---|"]
    for k in INSTRUMENTS:
        steps = sorted(set.intersection(*(set(x[k]) for x in c["fp32"] + c["bf16"])) - {0})  # 0: the same init
        gap = statistics.mean(abs(b[k][s] - a[k][s]) for a, b in zip(c["fp32"], c["bf16"]) for s in steps)
        spread = statistics.mean(statistics.stdev([a[k][s] for a in c["fp32"]]) for s in steps)
        lines.append(f"| {k} | {gap:.4g} | {spread:.4g} | {gap / spread:.2f} |")
    return lines


def plot(c: dict[str, list[dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(INSTRUMENTS), figsize=(4 * len(INSTRUMENTS), 3.2))
    for ax, k in zip(axes, INSTRUMENTS):
        for precision, style in (("fp32", "-"), ("bf16", "--")):
            for i, cur in enumerate(c[precision]):
                steps = sorted(cur[k])
                ax.plot(steps, [cur[k][s] for s in steps], style, color=f"C{i}",
                        label=f"{precision} seed {i}" if k == INSTRUMENTS[0] else None)
        ax.set_title(k)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training images (0 = all 60 000)")
    p.add_argument("--heldout-every", type=int, default=10)
    p.add_argument("--runs", default="runs/precision_parity")
    p.add_argument("--out")
    args = p.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    if len(seeds) < 2:
        p.error("--seeds needs at least two seeds (the fp32 seed-to-seed spread is the yardstick)")
    rows, knn, c, evals = [], {"fp32": [], "bf16": []}, {"fp32": [], "bf16": []}, []
    for seed in seeds:  # seed-major: an interrupted check still has both precisions for the first seeds
        for precision in ("fp32", "bf16"):
            out = run(seed, precision, args)
            s = finished_summary(out)
            knn[precision].append(s["final_knn_acc"])
            c[precision].append(curves(out))
            accs = " | ".join(f"{k['knn_acc']:.2f}" for k in s["knn"])
            rows.append(f"| {precision} | {seed} | {accs} | {s['wall_time_s']:.0f} |")
            print(rows[-1], flush=True)
        evals.append(eval_precision_gap(out))
    diffs = [b - a for a, b in zip(knn["fp32"], knn["bf16"])]
    lines = [*header("Precision parity: bf16 autocast vs fp32, paired by seed"),
             f"- simsiam preset, width 16, batch 256, {args.epochs} epochs on {args.limit or 60000} training "
             f"images; weighted kNN (k = 200) on all 10 000 test images; instruments every {args.heldout_every} "
             "steps on 2 000 held-out test images", "",
             "| precision | seed | " + " | ".join(f"kNN after epoch {e + 1} (%)" for e in range(args.epochs))
             + " | wall time (s) |", "|---" * (args.epochs + 3) + "|", *rows, "",
             f"- final kNN: fp32 {statistics.mean(knn['fp32']):.2f} ± {statistics.stdev(knn['fp32']):.2f}, "
             f"bf16 {statistics.mean(knn['bf16']):.2f} ± {statistics.stdev(knn['bf16']):.2f}; bf16 − fp32 paired "
             f"by seed {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} points "
             f"({', '.join(f'{d:+.2f}' for d in diffs)})",
             *instrument_lines(c), "",
             "- evaluation precision (the bf16 runs' final weights): kNN from fp32 features "
             + ", ".join(f"{a:.2f}" for a, _ in evals) + "; from bf16 features "
             + ", ".join(f"{b:.2f}" for _, b in evals) + f"; mean difference "
             f"{statistics.mean(b - a for a, b in evals):+.3f} points"]
    if args.out:
        figure = os.path.splitext(args.out)[0] + ".png"
        plot(c, figure)
        lines += ["", f"![instrument curves]({os.path.basename(figure)})"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
