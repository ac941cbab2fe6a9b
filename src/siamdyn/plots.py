"""Plots of run directories: one PNG per quantity, runs overlaid, run names in the legend."""
from __future__ import annotations

import math
import os
from functools import partial
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from siamdyn.errors import SiamdynError, warn  # noqa: E402
from siamdyn.outputs import atomic_write, output_dir, refuse_existing  # noqa: E402
from siamdyn.runs import read_metrics  # noqa: E402


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def save_figure(fig: Figure, path: str) -> str:
    """Lay out, write atomically as PNG (outputs.py: an OSError is one line) and close `fig`."""
    fig.tight_layout()
    try:
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format="png"))
    finally:
        plt.close(fig)  # an unwritable --out must not leak open figures
    return path


def _finish(fig, axes, path: str) -> str:
    """Common axis dressing (step on x, grid, legend where labelled), then save and close."""
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


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


def _proj_dim(run_dirs: list[str]) -> int | None:
    """The runs' common output dimension d (for the 1/√d reference lines), if they share one."""
    from siamdyn.runs import load_run_config
    try:
        dims = {load_run_config(d).proj_dim for d in run_dirs}
    except SiamdynError:
        return None
    return dims.pop() if len(dims) == 1 else None


def plot_runs(run_dirs: list[str], out_dir: str, proj_dim: int | None = None,
              names: list[str] | None = None, overwrite: bool = False) -> list[str]:
    """Every standard plot for a set of runs into `out_dir`; quantities no run logged are skipped.
    Legends use `names`, or the run folders' names. A PNG already there is refused before any is
    drawn, unless `overwrite` (outputs.py)."""
    names = names or [os.path.basename(os.path.normpath(d)) for d in run_dirs]
    runs = {name: read_metrics(d) for name, d in zip(names, run_dirs)}
    empty = [d for name, d in zip(names, run_dirs) if not runs[name]]
    if len(empty) == len(run_dirs):  # figures of nothing would look like a plot of a run that did nothing
        raise SiamdynError(f"{', '.join(empty)}: no metric lines in metrics.jsonl yet, so nothing to plot; "
                           "plot a run once it has logged a step")
    for d in empty:
        warn(f"{d} has no metric lines in metrics.jsonl yet; it is left out of the plots")
    runs = {name: lines for name, lines in runs.items() if lines}
    plan = _plan(runs, proj_dim or _proj_dim(run_dirs))
    paths = [os.path.join(out_dir, name) for name, _ in plan]
    refuse_existing(paths, overwrite)
    output_dir(out_dir, overwrite)
    return [draw(path) for (_, draw), path in zip(plan, paths)]


def _plan(runs: dict[str, list[dict]], proj_dim: int | None) -> list[tuple[str, Callable[[str], str]]]:
    """(file name, draw into that path) for each plot the runs have data for: the names are known
    before anything is drawn, so existing files are refused first."""
    logged = {k for records in runs.values() for r in records for k in r}
    plan: list[tuple[str, Callable[[str], str]]] = [
        ("loss.png", partial(plot_metric, runs, "loss", ylabel="loss", title="training loss"))]
    hl = {}
    if proj_dim:
        hl = {"healthy 1/√d": 1 / math.sqrt(proj_dim), "collapse 0.25/√d": 0.25 / math.sqrt(proj_dim)}
    for key, what in (("z_std", "projector output z"), ("p_std", "predictor output p")):
        plan.append((f"collapse_{key}.png", partial(plot_metric, runs, key, ylabel=f"mean std of {key[0]}/‖{key[0]}‖ "
                                                    "per dim", title=f"collapse metric of the {what}", hlines=hl)))
    for key, name, what in (("z_erank", "effective_rank_z.png", "projector output z"),
                            ("feature_erank", "effective_rank_features.png", "backbone features")):
        if key in logged:
            plan.append((name, partial(plot_metric, runs, key, ylabel="RankMe",
                                       title=f"effective rank of the {what}", logy=True)))
    if "alignment" in logged:
        plan.append(("alignment_uniformity.png", partial(plot_panels, runs, [
            ("alignment", "alignment E‖ẑ1−ẑ2‖² (lower = views agree)"),
            ("uniformity", "uniformity log E exp(−2‖ẑi−ẑj‖²) (0 = collapsed)")])))
        plan.append(("cosines.png", partial(plot_panels, runs, [("cos_views", "mean cos between the two views"),
                                                                ("cos_images", "mean cos between different images")])))
    if "g1_norm" in logged:
        plan += [("gradient_split.png", partial(plot_gradient_split, runs)),
                 ("module_speeds.png", partial(plot_module_speeds, runs))]
    if "pred_eigs" in logged:
        plan.append(("predictor_spectrum.png", partial(plot_predictor_spectrum, runs)))
    if "knn_acc" in logged:
        plan.append(("knn.png", partial(plot_metric, runs, "knn_acc", ylabel="kNN accuracy (%)", title="weighted kNN")))
    return plan


def plot_panels(runs: dict[str, list[dict]], panels: list[tuple[str, str]], path: str) -> str:
    """One panel per (key, title), runs overlaid in each."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for name, records in runs.items():
            ax.plot(*series(records, key), label=name)
        ax.set_title(title, fontsize=9)
    return _finish(fig, axes[0], path)


def plot_gradient_split(runs: dict[str, list[dict]], path: str) -> str:
    """‖g1‖ (solid) and ‖g2‖ (dashed) of docs/seed.md §3 per run, and their ratio."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, records) in enumerate(runs.items()):
        for key, ls in (("g1_norm", "-"), ("g2_norm", "--")):
            xs, ys = series(records, key)
            ax1.plot(xs, ys, ls=ls, color=f"C{i}",
                     label=f"{name} {'‖g1‖ term 1' if key == 'g1_norm' else '‖g2‖ term 2'}")
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
                      key=lambda k: ["stem", "stage1", "stage2", "stage3", "stage4", "projector",
                                     "predictor"].index(k[6:]))
        for key in keys:
            xs, ys = series(records, key)
            ax.plot(xs, ys, label=key[6:])
        ax.set_yscale("log")
        ax.set_title(f"{name}: ‖Δw‖/‖w‖ per step", fontsize=9)
    return _finish(fig, axes[0], path)


def plot_predictor_spectrum(runs: dict[str, list[dict]], path: str) -> str:
    """DirectPred view of linear-predictor runs: top eigenvalues of sym(W_p) and of F = E[zzᵀ]
    over training, one row per run, and the eigenvector alignment of F's top directions."""
    runs = {n: r for n, r in runs.items() if any("pred_eigs" in x for x in r)}
    fig, axes = plt.subplots(len(runs), 3, figsize=(15, 3.6 * len(runs)), squeeze=False)
    for row, (name, records) in zip(axes, runs.items()):
        for ax, key, title in ((row[0], "pred_eigs", "eigenvalues of sym(W_p)"),
                               (row[1], "z_corr_eigs", "eigenvalues of F = E[z zᵀ]")):
            xs, eigs = series(records, key)
            for j in range(len(eigs[0]) if eigs else 0):
                ax.plot(xs, [e[j] for e in eigs], label=f"λ{j + 1}")
            ax.set_title(f"{name}: {title}", fontsize=9)
        row[1].set_yscale("log")
        row[2].plot(*series(records, "pred_eig_alignment"), label="|cos(u, W_p u)|, top eigvecs u of F")
        row[2].plot(*series(records, "pred_asymmetry"), label="‖W−Wᵀ‖/‖W+Wᵀ‖")
        row[2].set_title(f"{name}: eigenvector alignment", fontsize=9)
    return _finish(fig, axes.flatten(), path)


def bar_chart(groups: dict[str, dict[str, float]], ylabel: str, path: str, logy: bool = False) -> str:
    """Grouped bars: one group per key of `groups`, one bar per inner key."""
    fig, ax = plt.subplots(figsize=(max(6.4, 1.3 * len(groups)), 4))
    inner = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / max(1, len(inner))
    for i, key in enumerate(inner):
        xs = [j + i * width for j in range(len(groups))]
        ax.bar(xs, [g.get(key, 0.0) for g in groups.values()], width, label=key)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))], list(groups), rotation=20, ha="right", fontsize=8)
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    if len(inner) > 1:
        ax.legend(fontsize=7)
    return save_figure(fig, path)
