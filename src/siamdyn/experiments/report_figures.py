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
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from siamdyn.plots import save_figure
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
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
