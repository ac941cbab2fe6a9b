"""Time-to-collapse curves: the rank ratio on the held-out batch against the step, per run group."""
from __future__ import annotations

import numpy as np

from siamdyn.experiments.readings import COLLAPSED_RATIO, HEALTHY_RATIO, Run, rank_ratio


def _band(ax, steps: list[int], rows: list[list[float | None]], color: str, label: str) -> None:
    vals = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
    if np.isfinite(vals).any():
        ax.plot(steps, np.nanmean(vals, 0), color=color, label=label)
        ax.fill_between(steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=color, alpha=0.15)


def plot_curves(groups: dict[str, list[Run]], reference: list[Run], path: str) -> str:
    """Per group, mean over seeds (line) and min–max (band): the rank ratio against the reference
    (left) and min(RankMe z, RankMe p) itself (right), on the held-out batch, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, runs) in enumerate(groups.items()):
        steps = sorted({s for r in runs for s in r.heldout})
        label = f"{name} ({len(runs)})"
        _band(left, steps, [[rank_ratio(r, reference, s) for s in steps] for r in runs], f"C{i}", label)
        _band(right, steps, [[min(r.heldout[s]["heldout/z_erank"], r.heldout[s]["heldout/p_erank"])
                              if s in r.heldout else None for s in steps] for r in runs], f"C{i}", label)
    left.axhline(COLLAPSED_RATIO, color="k", ls=":", lw=1)
    left.axhline(HEALTHY_RATIO, color="k", ls="--", lw=1)
    left.set_ylabel("rank ratio vs reference")
    right.set_ylabel("min(RankMe z, RankMe p)")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.set_xlabel("step")
    left.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
