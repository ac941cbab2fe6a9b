"""Time-to-collapse curves: the rank ratio on the held-out batch against the step, per run group."""
from __future__ import annotations

import numpy as np

from siamdyn.experiments.readings import COLLAPSED_RATIO, HEALTHY_RATIO, Run, rank_ratio


def plot_curves(groups: dict[str, list[Run]], reference: list[Run], path: str) -> str:
    """Mean over seeds (line) and min–max (band) of the rank ratio of each group, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (name, runs) in enumerate(groups.items()):
        steps = sorted({s for r in runs for s in r.heldout})
        rows = [[rank_ratio(r, reference, s) for s in steps] for r in runs]
        vals = np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)
        if not np.isfinite(vals).any():
            continue
        ax.plot(steps, np.nanmean(vals, 0), color=f"C{i}", label=f"{name} ({len(runs)})")
        ax.fill_between(steps, np.nanmin(vals, 0), np.nanmax(vals, 0), color=f"C{i}", alpha=0.15)
    ax.axhline(COLLAPSED_RATIO, color="k", ls=":", lw=1)
    ax.axhline(HEALTHY_RATIO, color="k", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("rank ratio vs reference (held-out)")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
