"""The long run: the best kNN and linear-probe accuracy one run of `siamdyn train`
reaches on fmnist-small in one to two hours of this CPU, then `siamdyn probe` on its backbone.

    python bench/long_run.py [--preset simclr] [--epochs 14] [--knn-every 2] [--out runs/long_simclr]
                             [--table bench/results/long_run_simclr.md]

It trains with the fmnist-small recipe of `siamdyn train` (the same CLI path a user takes),
unless `--out` already holds that run finished, then probes the final checkpoint (kNN at
k = 5/20/200 and the raw-pixel 5-NN protocol, logistic-regression probe) and writes the table.
"""
from __future__ import annotations

import argparse

from _common import emit, finished_summary, header

from siamdyn.cli import main as siamdyn  # noqa: E402
from siamdyn.presets import RAW_PIXEL_KNN  # noqa: E402
from siamdyn.probe_run import evaluate_run  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="simclr")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--knn-every", type=int, default=2)
    p.add_argument("--out", default="runs/long_simclr")
    p.add_argument("--table", default="bench/results/long_run_simclr.md")
    args = p.parse_args()
    s = finished_summary(args.out)
    if s is None:
        code = siamdyn(["train", "--preset", args.preset, "--epochs", str(args.epochs), "--set",
                        f"knn_every={args.knn_every}", "--out", args.out, "--overwrite", "--no-progress"])
        if code:
            raise SystemExit(code)
        s = finished_summary(args.out)
    e = evaluate_run(args.out)
    curve = [f"| {k['epoch']:.0f} | {k['step']} | {k['knn_acc']:.2f} | {k['time_s'] / 60:.1f} |" for k in s["knn"]]
    best = max(s["knn"], key=lambda k: k["knn_acc"])
    reached = {lvl: (f"at {v['time_s'] / 60:.1f} min" if v else "not reached") for lvl, v in s["time_to_knn"].items()}
    emit([*header(f"Long run: {args.preset}, {args.epochs} epochs, fmnist-small recipe"),
          f"- run: {args.out} ({s['steps']} steps of batch 256, {s['wall_time_s'] / 60:.1f} min of training wall "
          f"time incl. kNN evaluations and probes; collapse detector: {s['collapse_step'] or 'did not fire'})",
          "- kNN: weighted, k = 200, T = 0.1, cosine, bank = all 60 000 train images, queries = all 10 000 test",
          "", "| epoch | step | kNN (%) | wall min |", "|---|---|---|---|", *curve, "",
          f"- best kNN {best['knn_acc']:.2f} % (epoch {best['epoch']:.0f}); first crossing of the raw-pixel kNN "
          "levels: " + ", ".join(f"{lvl} % {t}" for lvl, t in reached.items()),
          "- final backbone (`siamdyn probe`): weighted kNN by k: "
          + ", ".join(f"k={k} {v:.2f} %" for k, v in e["knn_weighted_by_k"].items())
          + f"; euclidean 5-NN {e['knn5_euclidean_acc']:.2f} % (raw pixels under the same protocol: "
          f"{RAW_PIXEL_KNN['fashion-mnist'][1]} %)",
          f"- linear probe ({e['probe_epochs']} epochs, logistic regression on standardised frozen features): "
          f"test {e['linear_test_acc']:.2f} %, train {e['linear_train_acc']:.2f} %"], args.table)


if __name__ == "__main__":
    main()
