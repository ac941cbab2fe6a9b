"""`siamdyn demo`: collapse as it happens. SimSiam and SimSiam without stop-gradient
train side by side from the same initial weights on the same views; the second loses
the protection of SEED_NOTES §3 (term 2 reaches the encoder) and collapses."""
from __future__ import annotations

import math
import os
import time
from typing import Any

import torch

from siamdyn.baseline import run_baseline
from siamdyn.config import Config
from siamdyn.methods import SiameseMethod
from siamdyn.plots import plot_runs
from siamdyn.probes.collapse import COLLAPSE_FRACTION, HEALTHY_FRACTION
from siamdyn.runs import atomic_write_text, read_metrics
from siamdyn.train import train

DEMO_SETTINGS = dict(batch_size=128, limit=10000, test_limit=2000, knn_every=0, log_every=5)


def verdict(std: float, dim: int) -> str:
    scaled = std * math.sqrt(dim)
    if scaled < COLLAPSE_FRACTION:
        return "collapsed"
    return "healthy" if scaled > HEALTHY_FRACTION else "degraded"


def final_std(records: list[dict], last: int = 5) -> float:
    stds = [r["z_std"] for r in records if "z_std" in r][-last:]
    return sum(stds) / max(1, len(stds))


def run_demo(out: str, steps: int = 250, overwrite: bool = False, progress: bool = True,
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    settings = {**DEMO_SETTINGS, "max_steps": steps, "epochs": 0, **(overrides or {})}
    cfgs = {name: Config.from_preset(name, settings) for name in ("simsiam", "simsiam-no-sg")}
    torch.manual_seed(cfgs["simsiam"].seed)
    from siamdyn.train import load_data  # the shape of the data decides the stem's channels
    channels = load_data(cfgs["simsiam"])[0].shape[0]
    initial = SiameseMethod(cfgs["simsiam"], channels).state_dict()  # shared starting point
    summaries = {}
    for name, cfg in cfgs.items():
        summaries[name] = train(cfg, os.path.join(out, name), overwrite=overwrite, progress=progress,
                                initial_state=initial, desc=name)
    base = run_baseline(cfgs["simsiam"])
    dim = cfgs["simsiam"].proj_dim
    rows = []
    for name in cfgs:
        records = read_metrics(os.path.join(out, name))
        std = final_std(records)
        rows.append({"method": name, "final_std_x_sqrt_d": std * math.sqrt(dim), "final_z_std": std,
                     "verdict": verdict(std, dim), "knn_acc": summaries[name]["final_knn_acc"],
                     "collapse_step": summaries[name]["collapse_step"], "final_loss": records[-1].get("loss")
                     if "loss" in records[-1] else next(r["loss"] for r in reversed(records) if "loss" in r)})
    plots = plot_runs([os.path.join(out, n) for n in cfgs], os.path.join(out, "plots"), proj_dim=dim)
    result = {"rows": rows, "baseline": base, "steps": steps, "wall_time_s": time.perf_counter() - t0,
              "settings": settings}
    atomic_write_text(os.path.join(out, "report.md"), render_report(result, plots, out))
    return result


def render_table(result: dict[str, Any]) -> str:
    base = result["baseline"]
    lines = ["| method | final std·√d | verdict | collapse step | kNN acc (%) |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['final_std_x_sqrt_d']:.3f} | {r['verdict']} | "
                     f"{r['collapse_step'] if r['collapse_step'] is not None else '—'} | {r['knn_acc']:.2f} |")
    lines.append(f"| raw pixels (reference) | — | — | — | {base['raw_pixels_weighted_knn']:.2f} |")
    lines.append(f"| random-init encoder (reference) | — | — | — | {base['random_init_kaiming_weighted_knn']:.2f} |")
    return "\n".join(lines)


def render_report(result: dict[str, Any], plots: list[str], out: str) -> str:
    s = result["settings"]
    rel = [os.path.relpath(p, out) for p in plots]
    return "\n".join([
        "# siamdyn demo: stop-gradient prevents collapse", "",
        f"SimSiam and SimSiam without stop-gradient, {result['steps']} steps each from the same initial weights "
        f"and the same augmented views; batch {s['batch_size']}, {s['limit']} training images, kNN (weighted, "
        f"k=200) on a {s['limit']}-image bank and {s['test_limit']} test images. Wall time {result['wall_time_s']:.0f} s.",
        "", "Collapse is called when the mean per-dimension std of the L2-normalised projector output falls "
        f"below {COLLAPSE_FRACTION}/√d; healthy is above {HEALTHY_FRACTION}/√d (a spread-out output has ≈ 1/√d).", "",
        render_table(result), "",
        "Without stop-gradient, term 2 of SEED_NOTES §3 (the gradient through the target branch) reaches the "
        "encoder and drags every output to one point; with it, only term 1 acts and the output stays spread.", "",
        *[f"![{os.path.splitext(os.path.basename(p))[0]}]({p})" for p in rel], "",
    ])
