"""The grids H1–H9 of docs/seed.md as data: each cell is a preset plus overrides.

A budget fixes the size of every run (data, width, steps); the grid fixes what varies.
Cells that two grids share (a trained `simsiam` …) are one run directory, reused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from siamdyn.errors import ConfigError

# smoke: the pipeline in CI (seconds per run); small: ≤ 90 min for every grid with 3 seeds
# on a 2-core CPU; full: fmnist-small as docs/design.md §5 (hours).
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(dataset="synthetic", backbone_width=4, proj_hidden=32, proj_dim=32, pred_hidden=8, batch_size=32,
                  epochs=0, max_steps=6, lr=0.5, probe_every=3, knn_k=20, knn_every=0),
    "small": dict(limit=10000, test_limit=2000, backbone_width=8, batch_size=128, epochs=0, max_steps=100, lr=0.5,
                  probe_every=20, knn_every=0),
    "full": dict(epochs=3, lr=0.5, probe_every=50, knn_every=1),
}
ANALYSIS = {"smoke": dict(images=64, views=4, draws=3, probe_epochs=2),
            "small": dict(images=512, views=16, draws=8, probe_epochs=20),
            "full": dict(images=1024, views=32, draws=16, probe_epochs=30)}


@dataclass(frozen=True)
class Cell:
    """One configuration of a grid; its runs live in OUT/<grid>/<name>/seed<k>."""
    grid: str
    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def run_dir(self, out: str, seed: int) -> str:
        return f"{out}/{self.grid}/{self.name}/seed{seed}"


def _cells(grid: str, *specs: tuple[str, str, dict]) -> list[Cell]:
    return [Cell(grid, name, preset, dict(over)) for name, preset, over in specs]


SIMSIAM = Cell("H1", "simsiam", "simsiam")
BYOL = Cell("H3", "byol-tau0.99-cosine", "byol", {"tau": 0.99, "tau_schedule": "cosine"})
XBAR = Cell("H6", "xbar-K4-no-sg-crop0.2", "xbar", {"mean_views": 4})


def grid_cells(grid: str) -> list[Cell]:
    """The runs a grid needs (H7–H9 analyse runs trained by H1, H3, H6)."""
    if grid == "H1":
        return [SIMSIAM, *_cells("H1", ("simsiam-no-sg", "simsiam-no-sg", {}))]
    if grid == "H2":
        return _cells("H2", ("simsiam", "simsiam", {}), ("no-predictor", "simsiam-no-pred", {}),
                      ("linear-predictor", "simsiam", {"predictor": "linear"}))
    if grid == "H3":
        return [Cell("H3", f"byol-tau{tau}-{sched}", "byol", {"tau": tau, "tau_schedule": sched})
                for tau in (0.0, 0.9, 0.99, 0.996) for sched in ("fixed", "cosine")] + \
               _cells("H3", ("simsiam", "simsiam", {}))
    if grid == "H4":
        return [Cell("H4", f"pred-lr-x{s}", "simsiam", {"predictor_lr_scale": s}) for s in (0.01, 0.1, 1.0, 10.0)] + \
               _cells("H4", ("pred-frozen-random", "simsiam", {"predictor_lr_scale": 0.0}))
    if grid == "H5":
        return [Cell("H5", terms, "simsiam", {"grad_terms": terms})
                for terms in ("predictor_branch", "both", "target_branch")]
    if grid == "H6":
        return [Cell("H6", f"xbar-K{k}-{'sg' if sg else 'no-sg'}-crop{crop}", "xbar",
                     {"mean_views": k, "grad_terms": "predictor_branch" if sg else "both", "crop_scale_min": crop})
                for crop in (0.2, 0.6) for sg in (False, True) for k in (2, 4, 8)]
    if grid in ("H7", "H9"):
        return [SIMSIAM, BYOL, XBAR] if grid == "H7" else [SIMSIAM]
    if grid == "H8":
        return [SIMSIAM, BYOL]
    raise ConfigError(f"unknown experiment {grid!r}; choose one of: {', '.join(GRIDS)} or all")


GRIDS = tuple(f"H{i}" for i in range(1, 10))
