"""Recipe study: short fmnist-small runs, each a named change, ranked by kNN.

    python bench/recipe.py [--only NAME,...] [--seeds 0,1,2] [--out runs/recipe] [--table bench/results/recipe_prune.md]

Every run trains on a class-balanced 20 000-image subset of the train split for 2 epochs
(40 000 images seen, the lr schedule spans those 2 epochs), with the instruments on, and is
scored by weighted kNN (k=200, T=0.1) with those 20 000 as the bank and 2 000 test images
as queries. Raw pixels on the same bank and queries are the reference row. Finished runs
are skipped, so the study can be extended (add a row to STUDY) or resumed after a crash;
`--seeds` reruns rows under more seeds to confirm them (mean ± std in the table).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys

from _common import emit, finished_summary, header

from siamdyn.config import Config  # noqa: E402
from siamdyn.eval import weighted_knn  # noqa: E402
from siamdyn.runs import read_metrics  # noqa: E402
from siamdyn.runtime import load_data  # noqa: E402
from siamdyn.train import train  # noqa: E402

NOTES_MARK = "Notes (added by hand)"
PRUNE = dict(limit=20000, test_limit=2000, epochs=2, knn_every=0, probe_every=50)

# The pruning winners, which became FMNIST_RECIPE (presets.py) with the later passes' confirmed
# additions (SimSiam: warm-up, SIMSIAM_REC; BYOL: predictor lr ×10); the later passes vary them.
SIMSIAM_WIN = dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4)
BYOL_WIN = dict(SIMSIAM_WIN, crop_scale_min=0.5)
SIMCLR_WIN = dict(lr=0.5, crop_scale_min=0.5)
# The third pass's confirmed win, = FMNIST_RECIPE["simsiam"]; a literal here, so that a row
# keeps its meaning (and its finished run stays valid) when the recipe changes again.
SIMSIAM_REC = dict(SIMSIAM_WIN, warmup_epochs=0.2)

# name: (preset, changes). Names say what changed from the preset's paper recipe.
STUDY: dict[str, tuple[str, dict]] = {
    "simsiam": ("simsiam", {}),
    "simsiam-lr0.5": ("simsiam", dict(lr=0.5)),
    "simsiam-lr0.5-crop0.5": ("simsiam", dict(lr=0.5, crop_scale_min=0.5)),
    "simsiam-lr0.5-batch64": ("simsiam", dict(lr=0.5, batch_size=64)),
    "simsiam-adamw-lr2e-3": ("simsiam", SIMSIAM_WIN),
    "byol": ("byol", {}),
    "byol-lr0.5": ("byol", dict(lr=0.5)),
    "simclr-lr0.5": ("simclr", dict(lr=0.5)),
    # Second pass: the first pass's two wins (AdamW, milder crops) together, per method.
    "simsiam-adamw-crop0.5": ("simsiam", dict(SIMSIAM_WIN, crop_scale_min=0.5)),
    "byol-adamw-crop0.5": ("byol", BYOL_WIN),
    "simclr-adamw-crop0.5": ("simclr", dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, crop_scale_min=0.5)),
    "simclr-lr0.5-crop0.5": ("simclr", SIMCLR_WIN),
    # Third pass: one change each to the winners — warm-up, batch 512 (lr per 256 images, so
    # scaled ×2), predictor lr ×10 (H4's healthiest), LARS, BYOL τ, temperature.
    "simsiam-adamw-warmup0.2": ("simsiam", SIMSIAM_REC),
    "simsiam-adamw-predlr10": ("simsiam", dict(SIMSIAM_WIN, predictor_lr_scale=10.0)),
    "simsiam-adamw-batch512": ("simsiam", dict(SIMSIAM_WIN, batch_size=512)),
    "simsiam-lars-lr1": ("simsiam", dict(optimizer="lars", lr=1.0)),
    "byol-adamw-crop0.5-tau0.9": ("byol", dict(BYOL_WIN, tau=0.9)),
    "byol-adamw-crop0.5-predlr10": ("byol", dict(BYOL_WIN, predictor_lr_scale=10.0)),
    "simclr-lr0.5-crop0.5-batch512": ("simclr", dict(SIMCLR_WIN, batch_size=512)),
    "simclr-lr0.5-crop0.5-t0.5": ("simclr", dict(SIMCLR_WIN, temperature=0.5)),
    "simclr-lars-lr1-crop0.5": ("simclr", dict(optimizer="lars", lr=1.0, crop_scale_min=0.5)),
    # Fourth pass: one change each to the recipe as it now stands ("rec" = SIMSIAM_REC, i.e.
    # FMNIST_RECIPE["simsiam"]: AdamW + warm-up): lr, warm-up length, batch, the predictor's
    # lr (scale; decayed or fixed) and width, projector widths, the BN choice of the projector's
    # output (BYOL's head has none), backbone width; for BYOL: warm-up, τ and its schedule,
    # fixed predictor lr.
    "simsiam-rec-lr1e-3": ("simsiam", dict(SIMSIAM_REC, lr=1e-3)),
    "simsiam-rec-lr4e-3": ("simsiam", dict(SIMSIAM_REC, lr=4e-3)),
    "simsiam-rec-warmup0.5": ("simsiam", dict(SIMSIAM_REC, warmup_epochs=0.5)),
    "simsiam-rec-batch128": ("simsiam", dict(SIMSIAM_REC, batch_size=128)),
    "simsiam-rec-predlr10": ("simsiam", dict(SIMSIAM_REC, predictor_lr_scale=10.0)),
    "simsiam-rec-predsched": ("simsiam", dict(SIMSIAM_REC, predictor_fixed_lr=False)),
    "simsiam-rec-pred512": ("simsiam", dict(SIMSIAM_REC, pred_hidden=512)),
    "simsiam-rec-proj2048": ("simsiam", dict(SIMSIAM_REC, proj_hidden=2048, proj_dim=2048, pred_hidden=512)),
    "simsiam-rec-proj256": ("simsiam", dict(SIMSIAM_REC, proj_hidden=256, proj_dim=256, pred_hidden=64)),
    "simsiam-rec-byolproj": ("simsiam", dict(SIMSIAM_REC, projector="byol")),
    "simsiam-rec-width32": ("simsiam", dict(SIMSIAM_REC, backbone_width=32)),
    "byol-adamw-crop0.5-warmup0.2": ("byol", dict(BYOL_WIN, warmup_epochs=0.2)),
    "byol-adamw-crop0.5-tau0.996": ("byol", dict(BYOL_WIN, tau=0.996)),
    "byol-adamw-crop0.5-taufixed": ("byol", dict(BYOL_WIN, tau_schedule="fixed")),
    "byol-adamw-crop0.5-predfixed": ("byol", dict(BYOL_WIN, predictor_fixed_lr=True)),
    # LARS (BYOL's paper optimizer; SimSiam's one-seed 69.4 above) with the winners' other parts.
    "simsiam-lars-lr1-warmup0.2": ("simsiam", dict(optimizer="lars", lr=1.0, warmup_epochs=0.2)),
    "byol-lars-lr1-crop0.5-predlr10": ("byol", dict(optimizer="lars", lr=1.0, crop_scale_min=0.5,
                                                    predictor_lr_scale=10.0)),
    "simclr-lr0.5-crop0.5-width32": ("simclr", dict(SIMCLR_WIN, backbone_width=32)),
}


def raw_pixel_knn(cfg: Config) -> float:
    train_set, test_set = load_data(cfg)
    flat = lambda d: d.images.flatten(1).float()  # noqa: E731
    return weighted_knn(flat(train_set), train_set.labels, flat(test_set), test_set.labels, cfg.knn_k,
                        cfg.knn_temperature)


def run_dir(out: str, name: str, seed: int) -> str:
    """Seed 0 keeps the plain name (the pruning runs); confirmation seeds get a suffix."""
    return os.path.join(out, name if seed == 0 else f"{name}-seed{seed}")


def finished(out: str, name: str) -> list[dict]:
    """Summaries of the finished runs of one STUDY row: seed 0 first, then its confirmation
    seeds; empty while seed 0 has not finished (the other columns describe seed 0)."""
    dirs = [run_dir(out, name, 0), *sorted(glob.glob(os.path.join(out, glob.escape(name) + "-seed*")))]
    found = [finished_summary(d) for d in dirs]
    return [s for s in found if s is not None] if found[0] is not None else []


def hand_notes(table: str) -> list[str]:
    """The notes written by hand under the table (from the line starting with NOTES_MARK
    on), kept when the table is rewritten."""
    if not os.path.exists(table):
        return []
    with open(table) as f:
        lines = f.read().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(NOTES_MARK)), None)
    return [""] + lines[start:] if start is not None else []


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", help="comma-separated STUDY names (default: all)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per row (confirm a winner with 0,1,2)")
    p.add_argument("--out", default="runs/recipe")
    p.add_argument("--table", default="bench/results/recipe_prune.md")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(STUDY)
    unknown = [n for n in names if n not in STUDY]
    if unknown:
        sys.exit(f"unknown study row(s) {unknown}; choose from {', '.join(STUDY)}")
    for seed in [int(x) for x in args.seeds.split(",")]:
        for name in names:
            preset, changes = STUDY[name]
            out = run_dir(args.out, name, seed)
            if finished_summary(out) is not None:
                continue
            print(f"[recipe] {name} seed {seed}", flush=True)
            train(Config.from_preset(preset, {**PRUNE, **changes, "seed": seed}), out, overwrite=True, progress=False)
    rows = [f"| raw pixels (reference) | — | — | {raw_pixel_knn(Config.from_preset('simsiam', PRUNE)):.2f} | | | | |"]
    for name, (preset, changes) in STUDY.items():
        runs = finished(args.out, name)
        if not runs:
            continue
        s, knn = runs[0], [r["final_knn_acc"] for r in runs]
        if len(knn) > 1:  # seed 0's number first, then the mean over all seeds
            knn_cell = f"{knn[0]:.2f}; {statistics.mean(knn):.2f} ± {statistics.stdev(knn):.2f} over {len(knn)} seeds"
        else:
            knn_cell = f"{knn[0]:.2f}"
        last = [r for r in read_metrics(run_dir(args.out, name, 0)) if "z_erank" in r][-1]
        change = ", ".join(f"{k}={v}" for k, v in changes.items()) or "preset defaults"
        rows.append(f"| {name} | {preset} | {change} | {knn_cell} | {s['wall_time_s']:.0f} | {last['z_erank']:.1f} | "
                    f"{last['p_std'] * Config.from_preset(preset, changes).proj_dim ** 0.5:.2f} | "
                    f"{'@' + str(s['collapse_step']) if s['collapse_step'] else 'no'} |")
    emit([
        *header("Recipe study, pruning stage"), f"- runs in {args.out}/",
        f"- every run: {json.dumps(PRUNE)}; width-16 ResNet-18 unless the row says otherwise; "
        "kNN bank = the 20 000 training images, 2 000 test queries",
        "- columns other than kNN are seed 0's run",
        "", "| run | preset | change | kNN (%) | wall s | RankMe z (end) | p std·√d (end) | collapsed |",
        "|---|---|---|---|---|---|---|---|", *rows, *hand_notes(args.table)], args.table)

if __name__ == "__main__":
    main()
