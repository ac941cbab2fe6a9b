"""Collapse over time at level (b): each head's position between the scale's controls (0 = the
positive controls, 1 = the negative control) on the held-out batch, per run group."""
from __future__ import annotations

import numpy as np

from siamdyn.experiments.levels import HEADS, HeadScale, position
from siamdyn.experiments.readings import Run


def _band(ax, steps: list[int], rows: list[list[float | None]], color: str, label: str) -> None:
    vals = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    if np.isfinite(vals).any():
        ax.plot(steps, np.nanmean(vals, 0), color=color, label=label)
        ax.fill_between(steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=color, alpha=0.15)


def plot_positions(groups: dict[str, list[Run]], calibration: dict[str, HeadScale | None], path: str,
                   title: str) -> str:
    """Per group, mean over seeds (line) and min–max (band) of the position of z (left) and p
    (right); dotted: collapsed below, dashed: healthy above."""
    from siamdyn.plots import save_figure
    fig, grid = _figure(1, 2, (11, 4))
    axes = grid[0]
    for ax, head in zip(axes, HEADS):
        cal = calibration.get(head)
        if cal is None:
            continue
        for i, (name, runs) in enumerate(groups.items()):
            steps = sorted({s for r in runs for s in r.heldout})
            _band(ax, steps, [[position(r, head, cal, s) for s in steps] for r in runs], f"C{i % 10}",
                  f"{name} ({len(runs)})")
        ax.axhline(cal.collapsed_below, color="k", ls=":", lw=1)
        ax.axhline(cal.healthy_above, color="k", ls="--", lw=1)
        ax.set_ylabel(f"position of log RankMe({head})")
        ax.set_xlabel("step")
        ax.set_title(f"{title}: {head}", fontsize=9)
    axes[0].legend(fontsize=6, loc="lower right")
    return save_figure(fig, path)


def _figure(rows: int, cols: int, size: tuple[float, float]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(rows, cols, figsize=size, squeeze=False)


# Q1's depths over time: RankMe at the backbone, the projector's hidden layer and z, the scale of z
# (which RankMe does not see), the prediction's |cos| between images and the backbone's kNN.
DEPTHS = {"heldout/feature_erank": "RankMe(backbone)", "heldout/proj_hidden_erank": "RankMe(projector hidden)",
          "heldout/z_erank": "RankMe(z)", "heldout/z_mean_norm": "mean ‖z‖", "heldout/p_abs_cos": "mean |cos| of p"}


def _series(runs: list[Run], read) -> tuple[list[int], list[float]]:
    """Mean over seeds at every step where any seed has the reading."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        for step, value in read(r):
            by_step.setdefault(step, []).append(value)
    steps = sorted(by_step)
    return steps, [float(np.mean(by_step[s])) for s in steps]


def plot_depths(groups: dict[str, list[Run]], path: str, title: str) -> str:
    """Per group, the mean over seeds of each depth's reading over the steps (log scale for RankMe
    and ‖z‖), and the backbone's kNN at each reading."""
    from siamdyn.plots import save_figure
    fig, axes = _figure(2, 3, (18, 7.5))
    for i, (name, runs) in enumerate(groups.items()):
        style = dict(color=f"C{i % 10}", ls="-" if i < 10 else "--", lw=1.2, label=f"{name} ({len(runs)})")
        for ax, (k, label) in zip(axes.flat, DEPTHS.items()):
            ax.plot(*_series(runs, lambda r, k=k: [(s, h[k]) for s, h in r.heldout.items() if k in h]), **style)
            ax.set_title(label, fontsize=9)
            ax.set_yscale("log" if "erank" in k or "norm" in k else "linear")
        axes[1, 2].plot(*_series(runs, lambda r: [(h["step"], h["knn_acc"]) for h in r.summary.get("knn", [])
                                                  if h.get("knn_acc") is not None]), marker=".", **style)
    axes[1, 2].set_title("backbone kNN (%)", fontsize=9)
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0, 2].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # outside: 15 groups
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_early_warning(curves: dict[str, dict], rhos: dict[str, dict], median_collapse: float | None, path: str,
                       title: str) -> str:
    """Left: each early predictor's AUC for the final outcome over the steps, with its Hanley–McNeil band,
    filled marks where the exact Mann–Whitney p < FAMILY_ALPHA, the dotted line at the collapsed seeds'
    median collapse step. Right: its Spearman ρ with the final completeness (a), with the Fisher-z band
    (both bands at FAMILY_LEVEL)."""
    from siamdyn.experiments.early_warning import FAMILY_ALPHA
    from siamdyn.plots import save_figure
    fig, axes = _figure(1, 2, (16, 4.5))
    color = {name: f"C{i}" for i, name in enumerate(dict.fromkeys([*curves, *rhos]))}  # one per predictor
    panels = [(axes[0, 0], curves, lambda v: (v.value, v.low, v.high), "AUC for the final outcome (collapsed)",
               0.5, (0, 1)),
              (axes[0, 1], rhos, lambda v: v[:3], "Spearman ρ with the final completeness (a)", 0.0, (-1, 1))]
    for ax, data, read, label, null, limits in panels:
        for name, curve in data.items():
            steps = sorted(curve)
            mid, low, high = zip(*(read(curve[s]) for s in steps))
            ax.plot(steps, mid, color=color[name], label=name)
            ax.fill_between(steps, low, high, color=color[name], alpha=0.12)
        ax.axhline(null, color="k", lw=0.8)
        ax.set(xlabel="step", ylabel=label, ylim=limits, title=f"{title}: {label}")
        ax.grid(alpha=0.3)
    handles = [h for ax in axes[0] for h in ax.get_lines() if not h.get_label().startswith("_")]
    if handles:  # one legend for both panels (one colour per predictor), outside them: the curves fill the plot
        axes[0, 1].legend(handles=list({h.get_label(): h for h in handles}.values()), fontsize=7, loc="upper left",
                          bbox_to_anchor=(1.02, 1.0))
    for name, curve in curves.items():
        sig = [s for s in sorted(curve) if curve[s].p < FAMILY_ALPHA]
        axes[0, 0].plot(sig, [curve[s].value for s in sig], "o", color=color[name], ms=4)
    if median_collapse is not None:
        axes[0, 0].axvline(median_collapse, color="k", ls=":", lw=1)
    if not curves:  # every seed had the same outcome
        axes[0, 0].text(0.5, 0.5, "the outcomes did not split: no AUC", ha="center", transform=axes[0, 0].transAxes)
    return save_figure(fig, path)


def plot_feature_choice(diffs: dict[str, dict[str, tuple[float, float, float]]], path: str, title: str) -> str:
    """Per encoder (one panel), each test-time input's kNN minus f(x), paired by seed: mean and its
    Student-t 95 % interval (`diffs`: encoder → input → (mean, low, high))."""
    from siamdyn.plots import save_figure
    fig, axes = _figure(1, len(diffs), (3.6 * len(diffs), 4.8))
    for ax, (encoder, rows) in zip(axes[0], diffs.items()):
        names = list(rows)
        means = np.array([rows[n][0] for n in names])
        err = np.array([[m - rows[n][1], rows[n][2] - m] for n, m in zip(names, means)]).T
        ax.barh(range(len(names)), means, xerr=np.nan_to_num(err), color="C0", alpha=0.7, capsize=2)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(names)), names if ax is axes[0, 0] else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel="kNN − f(x) (points)", title=encoder)
        ax.grid(alpha=0.3, axis="x")
        ax.sharex(axes[0, 0]) if ax is not axes[0, 0] else None  # one scale: encoders compared by eye
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
