"""Plots of run directories: one PNG per quantity, runs overlaid, run names in the legend."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from siamdyn.runs import read_metrics  # noqa: E402


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _finish(fig, axes, path: str) -> str:
    """Common axis dressing, then save and close."""
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_metric(runs: dict[str, list[dict]], key: str, path: str, ylabel: str, title: str,
                hlines: dict[str, float] | None = None, logy: bool = False) -> str:
    """Overlay `key` against step for each run; `hlines` draws labelled reference levels."""
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for name, records in runs.items():
        xs, ys = series(records, key)
        ax.plot(xs, ys, label=name, marker="o" if len(xs) < 20 else None)
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="grey")
        ax.annotate(label, (0, y), textcoords="offset points", xytext=(4, 3), fontsize=8, color="grey",
                    xycoords=("axes fraction", "data"))
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _finish(fig, [ax], path)


def plot_runs(run_dirs: list[str], out_dir: str, proj_dim: int | None = None) -> list[str]:
    """The standard plots (loss, collapse std, kNN) for a set of runs."""
    runs = {os.path.basename(os.path.normpath(d)): read_metrics(d) for d in run_dirs}
    paths = [plot_metric(runs, "loss", os.path.join(out_dir, "loss.png"), "loss", "training loss")]
    hl = {}
    if proj_dim:
        hl = {"healthy 1/√d": 1 / math.sqrt(proj_dim), "collapse 0.25/√d": 0.25 / math.sqrt(proj_dim)}
    for key, what in (("z_std", "projector output z"), ("p_std", "predictor output p")):
        paths.append(plot_metric(runs, key, os.path.join(out_dir, f"collapse_{key}.png"),
                                 f"mean std of {key[0]}/‖{key[0]}‖ per dim", f"collapse metric of the {what}", hl))
    paths.append(plot_metric(runs, "z_erank", os.path.join(out_dir, "effective_rank_z.png"), "RankMe of z",
                             "effective rank of the projector output", logy=True))
    if any(series(r, "g1_norm")[0] for r in runs.values()):
        paths.append(plot_gradient_split(runs, os.path.join(out_dir, "gradient_split.png")))
        paths.append(plot_module_speeds(runs, os.path.join(out_dir, "module_speeds.png")))
    if any(series(r, "knn_acc")[0] for r in runs.values()):
        paths.append(plot_metric(runs, "knn_acc", os.path.join(out_dir, "knn.png"), "kNN accuracy (%)", "weighted kNN"))
    return paths


def plot_gradient_split(runs: dict[str, list[dict]], path: str) -> str:
    """‖g1‖ (solid) and ‖g2‖ (dashed) of SEED_NOTES §3 per run, and their ratio."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, records) in enumerate(runs.items()):
        for key, ls in (("g1_norm", "-"), ("g2_norm", "--")):
            xs, ys = series(records, key)
            ax1.plot(xs, ys, ls=ls, color=f"C{i}", label=f"{name} {'‖g1‖ term 1' if key == 'g1_norm' else '‖g2‖ term 2'}")
        xs, ys = series(records, "g2_over_g1")
        ax2.plot(xs, ys, color=f"C{i}", label=name)
    ax1.set_yscale("log")
    ax1.set_title("encoder gradient through the predictor (g1) and target (g2) branch", fontsize=9)
    ax2.set_yscale("log")
    ax2.set_title("‖g2‖ / ‖g1‖", fontsize=9)
    return _finish(fig, [ax1, ax2], path)


def plot_module_speeds(runs: dict[str, list[dict]], path: str) -> str:
    """Relative update size ‖Δw‖/‖w‖ per module group, one panel per run."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 4), squeeze=False)
    for ax, (name, records) in zip(axes[0], runs.items()):
        keys = sorted({k for r in records for k in r if k.startswith("speed/")},
                      key=lambda k: ["stem", "stage1", "stage2", "stage3", "stage4", "projector", "predictor"].index(k[6:]))
        for key in keys:
            xs, ys = series(records, key)
            ax.plot(xs, ys, label=key[6:])
        ax.set_yscale("log")
        ax.set_title(f"{name}: ‖Δw‖/‖w‖ per step", fontsize=9)
    return _finish(fig, axes[0], path)
