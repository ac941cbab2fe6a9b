"""bf16 vs fp32, seed by seed: does bf16 autocast change what siamdyn measures?

    python bench/precision_parity.py --seeds 0,1,2 --epochs 2 --limit 20000
                                     --out bench/results/precision_parity_cpu.md

For each seed the same SimSiam run (width-16 ResNet-18, batch 256, the preset's recipe) is
trained once per arm (--arms): fp32 (the reference), bf16, and the control fp32-nchw, which
is fp32 with the NCHW layout: the same arithmetic summed in another order, so its gap to
fp32 is the floor set by the trajectory's sensitivity to rounding alone (a 1e-7 change in
one step's loss is 1e-4 two steps later). Compared, for every arm against fp32:
  - the final weighted kNN (k = 200) on the full test set, paired by seed;
  - the collapse instruments on a fixed held-out batch (std of z/‖z‖ and RankMe of z and p),
    the arm − fp32 gap against the seed-to-seed spread of the fp32 runs at the same steps;
  - evaluation precision: the bf16 run's kNN from bf16 features vs fp32 features of the
    same weights.
A figure of the instrument curves is written next to --out. On a CPU without bf16 units
bf16 is emulated (slow) but its numbers are still the ones to compare.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics

import torch
import torch.nn as nn

from _common import emit, finished_summary, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.eval import encoder_features, weighted_knn  # noqa: E402
from siamdyn.probe_run import load_trained  # noqa: E402
from siamdyn.runs import load_run_config, read_metrics  # noqa: E402
from siamdyn.runtime import eval_input  # noqa: E402
from siamdyn.train import train  # noqa: E402

INSTRUMENTS = ("heldout/z_std", "heldout/z_erank", "heldout/p_erank")
ARMS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
        "fp32-nchw": {"precision": "fp32", "channels_last": "off"},
        "bf16-heads-fp32": {"precision": "bf16"}, "bf16-bn-fp32": {"precision": "bf16"}}
# The arms that locate a bf16 shift: these module classes run in fp32 inside the bf16 autocast.
# The backbone has no Linear or BatchNorm1d, so heads-fp32 leaves bf16 in the convolutions and
# their BatchNorm2d only; bn-fp32 leaves it in every convolution and Linear.
FP32_MODULES = {"bf16-heads-fp32": (nn.Linear, nn.BatchNorm1d), "bf16-bn-fp32": (nn.BatchNorm1d, nn.BatchNorm2d)}


@contextlib.contextmanager
def modules_in_fp32(classes: tuple[type[nn.Module], ...]):
    """Patch these classes' forward to run in fp32 with autocast off, for the duration."""
    saved = {cls: cls.forward for cls in classes}

    def fp32(forward):
        def wrapped(self, x):
            with torch.autocast(x.device.type, enabled=False):
                return forward(self, x.float())
        return wrapped
    for cls in classes:
        cls.forward = fp32(saved[cls])
    try:
        yield
    finally:
        for cls, forward in saved.items():
            cls.forward = forward


def run(seed: int, arm: str, args: argparse.Namespace) -> str:
    cfg = Config.from_preset("simsiam", {"seed": seed, "epochs": args.epochs, "limit": args.limit, **ARMS[arm],
                                         "heldout_every": args.heldout_every, "heldout_images": 2000,
                                         "probe_every": 0})
    out = os.path.join(args.runs, f"{arm}-seed{seed}")
    if not (finished_summary(out) and load_run_config(out) == cfg):
        with modules_in_fp32(FP32_MODULES.get(arm, ())):
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
    """Per arm and instrument: mean |arm − fp32| over seeds and steps vs the fp32 seed-to-seed std."""
    lines = ["", "| arm | instrument (held-out batch) | mean abs(arm − fp32), paired by seed | fp32 std over seeds | "
             "ratio |", "|---|---|---|---|---|"]
    for arm in (a for a in c if a != "fp32"):
        for k in INSTRUMENTS:
            steps = sorted(set.intersection(*(set(x[k]) for x in c["fp32"] + c[arm])) - {0})  # 0: the same init
            gap = statistics.mean(abs(b[k][s] - a[k][s]) for a, b in zip(c["fp32"], c[arm]) for s in steps)
            spread = statistics.mean(statistics.stdev([a[k][s] for a in c["fp32"]]) for s in steps)
            lines.append(f"| {arm} | {k} | {gap:.4g} | {spread:.4g} | {gap / spread:.2f} |")
    return lines


def knn_lines(knn: dict[str, list[float]]) -> list[str]:
    """Final kNN per arm and each arm's gap to fp32, paired by seed."""
    lines = ["- final kNN: " + "; ".join(f"{arm} {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"
                                         for arm, v in knn.items())]
    for arm in (a for a in knn if a != "fp32"):
        diffs = [b - a for a, b in zip(knn["fp32"], knn[arm])]
        lines.append(f"- {arm} − fp32, paired by seed: {statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} "
                     f"points, mean abs {statistics.mean(abs(d) for d in diffs):.2f} "
                     f"({', '.join(f'{d:+.2f}' for d in diffs)})")
    return lines


def plot(c: dict[str, list[dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(INSTRUMENTS), figsize=(4 * len(INSTRUMENTS), 3.2))
    for ax, k in zip(axes, INSTRUMENTS):
        for arm, style in zip(c, ("-", "--", ":")):
            for i, cur in enumerate(c[arm]):
                steps = sorted(cur[k])
                ax.plot(steps, [cur[k][s] for s in steps], style, color=f"C{i}",
                        label=f"{arm} seed {i}" if k == INSTRUMENTS[0] else None)
        ax.set_title(k)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="fp32,bf16,fp32-nchw", help=f"from {', '.join(ARMS)}; fp32 is the reference")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training images (0 = all 60 000)")
    p.add_argument("--heldout-every", type=int, default=10)
    p.add_argument("--runs", default="runs/precision_parity")
    p.add_argument("--out")
    args = p.parse_args()
    seeds, arms = [int(x) for x in args.seeds.split(",")], args.arms.split(",")
    if len(seeds) < 2:
        p.error("--seeds needs at least two seeds (the fp32 seed-to-seed spread is the yardstick)")
    if arms[0] != "fp32" or any(a not in ARMS for a in arms):
        p.error(f"--arms starts with fp32 (the reference) and takes only {', '.join(ARMS)}")
    rows, evals = [], []
    knn, c = {a: [] for a in arms}, {a: [] for a in arms}
    for seed in seeds:  # seed-major: an interrupted check still has every arm for the first seeds
        for arm in arms:
            out = run(seed, arm, args)
            s = finished_summary(out)
            knn[arm].append(s["final_knn_acc"])
            c[arm].append(curves(out))
            accs = " | ".join(f"{k['knn_acc']:.2f}" for k in s["knn"])
            rows.append(f"| {arm} | {seed} | {accs} | {s['wall_time_s']:.0f} |")
            print(rows[-1], flush=True)
            if arm == "bf16":
                evals.append(eval_precision_gap(out))
    lines = [*header("Precision parity: bf16 autocast vs fp32, paired by seed"),
             f"- simsiam preset, width 16, batch 256, {args.epochs} epochs on {args.limit or 60000} training "
             f"images; weighted kNN (k = 200) on all 10 000 test images; instruments every {args.heldout_every} "
             "steps on 2 000 held-out test images", "",
             "| arm | seed | " + " | ".join(f"kNN after epoch {e + 1} (%)" for e in range(args.epochs))
             + " | wall time (s) |", "|---" * (args.epochs + 3) + "|", *rows, "",
             *knn_lines(knn), *instrument_lines(c)]
    if evals:
        lines += ["", "- evaluation precision (the bf16 runs' final weights): kNN from fp32 features "
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
