"""bf16 vs fp32, seed by seed: does bf16 autocast change what siamdyn measures?

    python bench/precision_parity.py --seeds 0,1,2,3,4 --epochs 2 --limit 20000
                                     --out bench/results/precision_parity_cpu.md
    python bench/precision_parity.py --tables-only --arms fp32,fp32-nchw   # kernels only, seconds

For each seed the same SimSiam run (width-16 ResNet-18, batch 256, the preset's recipe) is
trained once per arm (--arms): fp32 (the reference), bf16, and the control fp32-nchw, which
is fp32 in the NCHW layout (other convolution and BatchNorm-backward kernels); bf16-nchw
completes the precision × layout square; fp32-exactbn is fp32 with siamdyn's exact channels_last
BatchNorm2d (exact_batchnorm=true); fp32-nchw-1thread is fp32-nchw on one thread: the
same kernels with the sums split differently, so its gap to fp32-nchw is the floor set by the
trajectory's sensitivity to rounding alone. Compared, for every pair of arms (kNN) or against fp32:
  - the final weighted kNN (k = 200) on the full test set, paired by seed;
  - the collapse instruments on a fixed held-out batch (std of z/‖z‖ and RankMe of z and p),
    the arm − fp32 gap against the seed-to-seed spread of the fp32 runs at the same steps;
  - each arm's rounding error in one step's gradient against float64 (and that of the fp32
    channels_last model with siamdyn's exact BatchNorm2d in place of PyTorch's channels_last
    kernel, whose float32 statistics it replaces), and that of training-mode BatchNorm2d alone;
  - evaluation precision: the bf16 run's kNN from bf16 features vs fp32 features of the
    same weights.
A figure of the instrument curves is written next to --out. On a CPU without bf16 units
bf16 is emulated (slow) but its numbers are still the ones to compare.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os
import statistics

import torch
import torch.nn.functional as F

from _common import emit, finished_summary, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.eval import encoder_features, weighted_knn  # noqa: E402
from siamdyn.models import Conv2d, as_torch_layers, batchnorm  # noqa: E402
from siamdyn.probe_run import load_trained  # noqa: E402
from siamdyn.runs import load_run_config, read_metrics  # noqa: E402
from siamdyn.distributed import Dist  # noqa: E402
from siamdyn.runtime import build_session, eval_input, make_views  # noqa: E402
from siamdyn.train import train  # noqa: E402

INSTRUMENTS = ("heldout/z_std", "heldout/z_erank", "heldout/p_erank")
ARMS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
        "fp32-nchw": {"precision": "fp32", "channels_last": "off"},
        "bf16-nchw": {"precision": "bf16", "channels_last": "off"},
        "fp32-nchw-1thread": {"precision": "fp32", "channels_last": "off", "threads": 1},
        "fp32-exactbn": {"precision": "fp32", "exact_batchnorm": True}}


def arm_config(arm: str, **overrides) -> Config:
    """The simsiam preset as this arm trains it: its layout, precision and threads come from here."""
    return Config.from_preset("simsiam", {**ARMS[arm], **overrides})


def relative_error(a: torch.Tensor, reference: torch.Tensor) -> float:
    return ((a.double() - reference).norm() / reference.norm()).item()


def planned_run(seed: int, arm: str, args: argparse.Namespace) -> tuple[Config, str, bool]:
    """(config, run directory, whether a finished run of that config is already there)."""
    cfg = arm_config(arm, seed=seed, epochs=args.epochs, limit=args.limit, heldout_every=args.heldout_every,
                     heldout_images=2000, probe_every=0)
    out = os.path.join(args.runs, f"{arm}-seed{seed}")
    return cfg, out, bool(finished_summary(out) and load_run_config(out) == cfg)


def run(seed: int, arm: str, args: argparse.Namespace) -> str:
    cfg, out, done = planned_run(seed, arm, args)
    if not done:
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


def gradient_error_lines(args: argparse.Namespace, arms: list[str]) -> list[str]:
    """Each arm's rounding error in one step's backbone gradient, against float64: the same
    initial weights and the same two augmented views of one real batch."""
    # The CPU kernels are the ones in question; built exact so that each arm can be either (one state dict).
    cfg = arm_config("fp32-nchw", limit=args.limit, device="cpu", exact_batchnorm=True)
    s = build_session(cfg, Dist())
    views, _ = make_views(s.model, s.augment, s.images[:cfg.batch_size], torch.Generator().manual_seed(0))

    def backbone_grad(arm: Config, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        fmt = arm.memory_format
        model = copy.deepcopy(s.model).to(dtype).to(memory_format=fmt)
        # PyTorch's conv kernels in every arm: a measured weight gradient would depend on which kernel's
        # turn it is (models/conv.py); the exact BatchNorm only where the arm's own config builds it.
        twins = {Conv2d: torch.nn.Conv2d}
        if not arm.exact_batchnorm:
            twins[batchnorm.BatchNorm2d] = torch.nn.BatchNorm2d
        as_torch_layers(model, twins)
        threads = torch.get_num_threads()
        torch.set_num_threads(arm.threads or threads)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=arm.precision == "bf16"):
                model([v.to(dtype).contiguous(memory_format=fmt) for v in views]).loss.backward()
        finally:
            torch.set_num_threads(threads)
        return torch.cat([p.grad.double().flatten() for p in model.backbone.parameters()])
    reference = backbone_grad(cfg, torch.float64)
    lines = ["", "Rounding error of one step's backbone gradient at initialisation, ‖g − g_float64‖ / ‖g_float64‖ "
             f"(batch {cfg.batch_size}, two augmented views of real images):", "",
             "| arm | relative error |", "|---|---|"]
    for arm in arms:
        lines.append(f"| {arm} | {relative_error(backbone_grad(arm_config(arm)), reference):.2e} |")
    if "fp32-exactbn" not in arms:
        error = relative_error(backbone_grad(arm_config("fp32-exactbn")), reference)
        lines.append(f"| fp32, siamdyn's exact BatchNorm2d (exact_batchnorm=true) | {error:.2e} |")
    return lines


# (in channels, input side, out channels, kernel, stride): stem, stage 1, and per later stage its
# strided 3×3, its 1×1 shortcut and its 3×3 at the new size.
BACKBONE_CONVS = ((1, 28, 16, 3, 1), (16, 28, 16, 3, 1),
                  (16, 28, 32, 3, 2), (16, 28, 32, 1, 2), (32, 14, 32, 3, 1),
                  (32, 14, 64, 3, 2), (32, 14, 64, 1, 2), (64, 7, 64, 3, 1),
                  (64, 7, 128, 3, 2), (64, 7, 128, 1, 2), (128, 4, 128, 3, 1))


def conv_error_lines() -> list[str]:
    """Each convolution shape of the width-16 backbone alone, fp32 in each layout against
    float64: post-ReLU inputs (non-negative, as in the network; the stem sees normalised
    images), random weights and output gradients."""
    lines = ["", "Convolutions alone (batch 256, fp32 vs float64), relative error of forward / input gradient / "
             "weight gradient:", "", "| in → out channels, size, kernel, stride | NCHW | NHWC |", "|---|---|---|"]
    g = torch.Generator().manual_seed(0)
    for c, side, out, k, stride in BACKBONE_CONVS:
        x = torch.randn(256, c, side, side, generator=g, dtype=torch.float64)
        x = x if c == 1 else x.relu()
        w = torch.randn(out, c, k, k, generator=g, dtype=torch.float64) / (c * k * k) ** 0.5
        conv = functools.partial(F.conv2d, stride=stride, padding=k // 2)
        grad_y = torch.randn(conv(x, w).shape, generator=g, dtype=torch.float64)
        errors = []
        for fmt in (torch.contiguous_format, torch.channels_last):
            xs, ws = (t.float().contiguous(memory_format=fmt).requires_grad_() for t in (x, w))
            ref = [t.clone().requires_grad_() for t in (x, w)]
            y, y_ref = conv(xs, ws), conv(*ref)
            y.backward(grad_y.float().contiguous(memory_format=fmt))
            y_ref.backward(grad_y)
            errors.append(" / ".join(f"{relative_error(a, b):.1e}" for a, b in
                                     ((y, y_ref), (xs.grad, ref[0].grad), (ws.grad, ref[1].grad))))
        lines.append(f"| {c} → {out}, {side}², {k}×{k}, {stride} | {errors[0]} | {errors[1]} |")
    return lines


def batchnorm_error_lines() -> list[str]:
    """Where the channels_last fp32 error came from: training-mode BatchNorm2d alone, fp32 in
    each layout (PyTorch's kernels, and siamdyn's BatchNorm2d in NHWC) against float64, on
    inputs whose mean is 0 or 10 standard deviations."""
    lines = ["", "Training-mode BatchNorm2d alone (256 × 16 × 14 × 14, fp32 vs float64), relative error:", "",
             "| input mean / std | layout | forward | input gradient | weight gradient |", "|---|---|---|---|---|"]
    g = torch.Generator().manual_seed(0)
    for offset in (0.0, 10.0):
        x = torch.randn(256, 16, 14, 14, generator=g, dtype=torch.float64) + offset
        grad_out = torch.randn(x.shape, generator=g, dtype=torch.float64)
        ref_x, ref_bn = x.clone().requires_grad_(), torch.nn.BatchNorm2d(16, track_running_stats=False).double()
        ref_y = ref_bn(ref_x)
        ref_y.backward(grad_out)
        for layout, fmt, norm in (("NCHW, PyTorch", torch.contiguous_format, torch.nn.BatchNorm2d),
                                  ("NHWC, PyTorch", torch.channels_last, torch.nn.BatchNorm2d),
                                  ("NHWC, siamdyn's BatchNorm2d", torch.channels_last, batchnorm.BatchNorm2d)):
            x32 = x.float().contiguous(memory_format=fmt).requires_grad_()
            bn = norm(16, track_running_stats=False)
            y32 = bn(x32)
            y32.backward(grad_out.float().contiguous(memory_format=fmt))
            lines.append(f"| {offset:g} | {layout} | {relative_error(y32, ref_y):.1e} | "
                         f"{relative_error(x32.grad, ref_x.grad):.1e} | "
                         f"{relative_error(bn.weight.grad, ref_bn.weight.grad):.1e} |")
    return lines


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
    """Final kNN per arm, and every pair of arms' gap (row − column), paired by seed."""
    lines = ["- final kNN: " + "; ".join(f"{arm} {statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}"
                                         for arm, v in knn.items()), "",
             "Final kNN gap row − column, paired by seed: mean ± std over seeds [per seed]", "",
             "| | " + " | ".join(knn) + " |", "|---" * (len(knn) + 1) + "|"]
    for row in knn:
        cells = []
        for col in knn:
            diffs = [r - c for r, c in zip(knn[row], knn[col])]
            cells.append("—" if row == col else f"{statistics.mean(diffs):+.2f} ± {statistics.stdev(diffs):.2f} "
                         f"[{', '.join(f'{d:+.1f}' for d in diffs)}]")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def plot(c: dict[str, list[dict]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
    fig, axes = plt.subplots(1, len(INSTRUMENTS), figsize=(4 * len(INSTRUMENTS) + 2, 3.2))
    for ax, k in zip(axes, INSTRUMENTS):
        for j, arm in enumerate(c):
            for i, cur in enumerate(c[arm]):
                steps = sorted(cur[k])
                ax.plot(steps, [cur[k][s] for s in steps], linestyle=styles[j % len(styles)], color=f"C{i}",
                        linewidth=1, label=arm if (k == INSTRUMENTS[0] and i == 0) else None)
        ax.set_title(k)
        ax.set_xlabel("step")
    fig.legend(loc="center right", fontsize=7, title="line: arm\ncolour: seed", title_fontsize=7)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--arms", default=",".join(a for a in ARMS if a != "fp32-exactbn"),
                   help=f"from {', '.join(ARMS)}; fp32 is the reference")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--limit", type=int, default=20000, help="training images (0 = all 60 000)")
    p.add_argument("--heldout-every", type=int, default=10)
    p.add_argument("--runs", default="runs/precision_parity")
    p.add_argument("--out")
    p.add_argument("--tables-only", action="store_true",
                   help="only the rounding-error tables (seconds, no training): a quick check of a machine's kernels")
    args = p.parse_args()
    seeds, arms = [int(x) for x in args.seeds.split(",")], args.arms.split(",")
    if args.tables_only:
        emit([*header("Rounding error of the fp32 kernels against float64"),
              *gradient_error_lines(args, arms), *batchnorm_error_lines(), *conv_error_lines()], args.out)
        return
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
             *knn_lines(knn), *instrument_lines(c), *gradient_error_lines(args, arms), *batchnorm_error_lines(),
             *conv_error_lines()]
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
