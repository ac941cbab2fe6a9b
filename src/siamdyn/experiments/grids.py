"""The grids H1–H9 of docs/seed.md as data: each cell is a preset plus overrides.

A budget fixes the size of every run (data, width, steps, schedule); a grid fixes what
varies. Every collapse grid holds the controls: `simsiam` (negative control: must stay
healthy) and `simsiam-no-sg`, `siamese` (positive controls: must collapse). A cell that
several grids need is one run directory (`CONTROLS`, shared by name), trained once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from siamdyn.errors import ConfigError
from siamdyn.presets import recipe_overrides

# standard: 600 steps of batch 128 on 10 000 Fashion-MNIST images (7.7 epochs), width-8
# ResNet-18, the project's SimSiam recipe (AdamW, lr 2e-3 per 256, weight decay 1e-4;
# docs/recipe.md) with a 0.5-epoch warm-up and the cosine over the whole run; collapse read
# every 25 steps on 2 000 held-out test images. docs/findings.md states its adequacy, measured
# from the controls. smoke: the same pipeline in CI on synthetic data (seconds per run).
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": dict(dataset="synthetic", backbone_width=4, proj_hidden=32, proj_dim=32, pred_hidden=8, batch_size=32,
                  optimizer="adamw", lr=2e-3, weight_decay=1e-4,
                  epochs=0, max_steps=12, warmup_epochs=0.2, probe_every=4, probe_first=3, knn_k=20, knn_every=0,
                  heldout_every=4, heldout_images=64, log_every=2),
    "standard": dict(limit=10000, test_limit=2000, backbone_width=8, batch_size=128, epochs=0, max_steps=600,
                     optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.5, probe_every=50, probe_first=10,
                     knn_every=0, heldout_every=25, heldout_images=2000, log_every=5,
                     # fp32 on every machine: bf16 shifts the early dynamics (bench/results/precision_parity_*.md),
                     # and the findings must not depend on which machine ran them.
                     precision="fp32"),
}
# H7–H9 ask about feature quality, so their encoders must first beat a random-init encoder's kNN
# on the same bank; at 600 steps SimSiam does not yet (67.7 vs 69.0 %), at step 936 of a 2400-step
# cosine it does (70.7 %; bench/results/findings-v3/standard/README.md). `features`: standard over 1 200 steps.
BUDGETS["features"] = {**BUDGETS["standard"], "max_steps": 1200}
# Findings v3's scale axis (widths 4 and 16 beside the standard 8) and optimiser axis (the papers'
# SGD recipe at width 8: SimSiam's CIFAR settings, lr 0.06 per 256, momentum 0.9, weight decay
# 5e-4). Each scale holds its own controls; docs/protocol.md says what each reads.
BUDGETS["w4"] = {**BUDGETS["standard"], "backbone_width": 4}
BUDGETS["w16"] = {**BUDGETS["standard"], "backbone_width": 16}
BUDGETS["sgd"] = dict(BUDGETS["standard"])
# The horizon: 10x the standard steps at the cheapest scale, for the two "does not collapse"
# claims a longer run could overturn (grid `long`), with its own controls at that horizon.
BUDGETS["w4-long"] = {**BUDGETS["w4"], "max_steps": 6000, "heldout_every": 250, "log_every": 25, "probe_every": 500}
BUDGETS["smoke-sgd"] = dict(BUDGETS["smoke"])
BUDGETS["smoke-w8"] = {**BUDGETS["smoke"], "backbone_width": 8}  # the smoke's scale axis: a second width
# The open questions' smoke: half the steps, probes and held-out readings every 3 (Q3 reads them).
BUDGETS["smoke-q"] = {**BUDGETS["smoke"], "max_steps": 6, "probe_every": 3, "probe_first": 0, "heldout_every": 3}
# The seed's open questions (grids Q1, Q1-aug) at the cheapest scale: w4 over 400 steps, so that
# 5 seeds of every factorial cell fit the 3-hour budget of 2 cores (docs/open_questions.md "Cost");
# kNN every 2 epochs, so the backbone is read over time beside the heads.
BUDGETS["q-w4"] = {**BUDGETS["w4"], "max_steps": 400, "heldout_every": 20, "heldout_images": 1000, "knn_every": 2}
# Q3, speed against basin: the papers' SGD (under AdamW every step size is set by the lr, which erases
# the speed mechanism), probes every 10 steps so early quantities are read before any collapse.
BUDGETS["q-sgd-w4"] = {**BUDGETS["q-w4"], "probe_every": 10, "probe_first": 10, "knn_every": 0}
# Q2's second width: q-w4 at width 8, same steps, so the two scales differ in width alone.
BUDGETS["q-w8"] = {**BUDGETS["q-w4"], "backbone_width": 8}
SGD_RECIPE = dict(optimizer="sgd", lr=0.06, momentum=0.9, weight_decay=5e-4)
# An optimiser axis must hold every cell of a budget to one optimiser, so these win over a cell's
# own recipe (BYOL's AdamW); the cell keeps the rest of it (crops, predictor lr multiplier).
FORCED = {"sgd": SGD_RECIPE, "smoke-sgd": SGD_RECIPE, "q-sgd-w4": SGD_RECIPE}
FEATURE_BUDGET = {"smoke": "smoke", "standard": "features", "features": "features"}  # the analysed encoders
# Seeds per kind of cell: binary cells (a control, one change) need more than ladder rungs; a
# bimodal cell (H2c: some seeds collapse, some not) is read as P(collapse), which needs ≥ 20
# seeds for a Clopper–Pearson interval worth having: at the cheapest scale only (w4).
SEEDS = {"smoke": {"binary": 1, "ladder": 1, "bimodal": 2}, "standard": {"binary": 5, "ladder": 3, "bimodal": 5},
         "features": {"binary": 3, "ladder": 3, "bimodal": 3}, "w4": {"binary": 3, "ladder": 3, "bimodal": 20},
         "w16": {"binary": 3, "ladder": 3, "bimodal": 3}, "sgd": {"binary": 3, "ladder": 3, "bimodal": 3},
         "w4-long": {"binary": 2, "ladder": 2, "bimodal": 2}, "q-w4": {"binary": 5, "ladder": 5, "bimodal": 20},
         "q-sgd-w4": {"binary": 3, "ladder": 3, "bimodal": 20}, "q-w8": {"binary": 3, "ladder": 3, "bimodal": 3}}
SEEDS["smoke-sgd"] = SEEDS["smoke-w8"] = SEEDS["smoke"]
# The seed's open questions read P(complete collapse) per cell: ≥ 5 seeds where they run.
SEEDS["smoke-q"] = dict(SEEDS["smoke"])
for _budget, _n in (("smoke", 1), ("smoke-q", 1), ("q-w4", 5), ("w4", 5), ("standard", 5), ("sgd", 5), ("w16", 3),
                    ("q-w8", 3)):
    SEEDS[_budget]["question"] = _n
# Q1-aug's arms around the other bases: 3 seeds at q-w4, a cost compromise (at 5 they add 18 runs, the
# feature-mean base's ≈ 850 s each); most Q1 cells read 5/5 or 4/1 there (a 3-seed majority holds), but two
# split 3/2 (docs/open_questions.md, Readouts). Elsewhere a binary cell's count.
SEEDS["q-w4"]["aug"] = 3
# Controls run a binary cell's count, except under the SGD budgets and at w4 and w16: at 3 seeds their prediction
# bounds for RankMe crossed (q-sgd-w4 and sgd: z; w4: z and p; w16: p, 2026-12-05), and at q-w4 5 seeds separated z.
SEEDS["q-sgd-w4"]["control"] = SEEDS["w4"]["control"] = SEEDS["sgd"]["control"] = SEEDS["w16"]["control"] = 5
# The long runs' negative control at 2 seeds would set its prediction bound with t(1 df) = 12.7: 3 seeds each.
SEEDS["w4-long"]["control"] = 3
ANALYSIS = {"smoke": dict(images=64, views=4, draws=3, probe_epochs=2),
            "standard": dict(images=512, views=16, draws=8, probe_epochs=20)}
ANALYSIS["features"] = ANALYSIS["q-w4"] = ANALYSIS["q-w8"] = ANALYSIS["standard"]
ANALYSIS["smoke-q"] = ANALYSIS["smoke"]
# A linear probe of the final backbone (eval.json, the representation readout of findings v3), in
# epochs over the train split: 0 leaves it out.
PROBE_EPOCHS = {"smoke": 0, "smoke-sgd": 2, "smoke-w8": 0, "standard": 20, "features": 0, "w4": 20, "w16": 20,
                "sgd": 20, "w4-long": 20, "q-w4": 20, "q-sgd-w4": 0, "q-w8": 20}


@dataclass(frozen=True)
class Cell:
    """One configuration; its runs live in OUT/<grid>/<name>/seed<k>. `kind` sets its seed count."""
    grid: str
    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    kind: str = "binary"

    def run_dir(self, out: str, seed: int) -> str:
        return f"{out}/{self.grid}/{self.name}/seed{seed}"


CONTROLS = [Cell("controls", "simsiam", "simsiam", kind="control"),
            Cell("controls", "simsiam-no-sg", "simsiam-no-sg", kind="control"),
            Cell("controls", "siamese", "siamese", kind="control")]
NEGATIVE, POSITIVE = "simsiam", ("simsiam-no-sg", "siamese")


# BYOL in its own regime: the project's BYOL recipe (AdamW, milder crops, a 10x predictor lr;
# docs/recipe.md); the τ rungs differ in τ alone.
BYOL_RECIPE = recipe_overrides("byol", "fashion-mnist")


def _ladder(grid: str, specs: list[tuple[str, str, dict]]) -> list[Cell]:
    return [Cell(grid, name, preset, dict(over), "ladder") for name, preset, over in specs]


BYOL_COSINE = Cell("H3", "byol-tau0.99-cosine", "byol", {**BYOL_RECIPE, "tau": 0.99, "tau_schedule": "cosine"},
                   "ladder")
XBAR_K4 = Cell("H6", "xbar-K4", "xbar", {"mean_views": 4}, "ladder")
# The encoders H7–H9 analyse: the healthy control, BYOL (cosine τ) and eq. (10), trained longer.
FEATURES = [Cell("features", "simsiam", "simsiam"), Cell("features", BYOL_COSINE.name, "byol", BYOL_COSINE.overrides),
            Cell("features", XBAR_K4.name, "xbar", XBAR_K4.overrides)]


# Findings v3's core conditions, run at every scale and optimiser (same names as in their own
# grids, so the standard budget's runs serve both). BYOL τ = 0 at λ = 1 and λ = 10 (the recipe's).
CORE = [Cell("H2", "fixed-random-predictor", "simsiam", {"predictor_lr_scale": 0.0}),
        Cell("H2", "linear-predictor", "simsiam", {"predictor": "linear"}, "bimodal"),
        Cell("H2", "linear-predictor-lr-x10", "simsiam", {"predictor": "linear", "predictor_lr_scale": 10.0}),
        Cell("H3", "byol-tau0.0", "byol", {**BYOL_RECIPE, "tau": 0.0, "tau_schedule": "fixed"}, "ladder"),
        Cell("H3", "byol-tau0.0-pred-lr-x1", "byol",
             {**BYOL_RECIPE, "tau": 0.0, "tau_schedule": "fixed", "predictor_lr_scale": 1.0}, "binary"),
        XBAR_K4]


# The seed's open questions (docs/open_questions.md). Q1, "does eq. (10) collapse?": one factor at a
# time around eq. (10) as written (target f(x̄), no stop-gradient, no predictor, squared L2, a
# projector ending in BN) and around SimSiam, plus two interactions the question needs (the
# feature-mean target with stop-gradient: eq. (7)'s alternating reading; the cosine without the
# output BN). Cells other grids hold (xbar-K4: eq. (10) with the cosine; H2's no-predictor) are shared.
def _question(name: str, preset: str, over: dict | None = None) -> Cell:
    return Cell("Q1", name, preset, dict(over or {}), "question")


NO_OUT_BN = {"projector": "simsiam-no-out-bn"}
FEATURE_MEAN = {"target": "view_feature_mean"}
FACTORIAL = [
    _question("eq10", "eq10"), _question("eq10-target-feature-mean", "eq10", FEATURE_MEAN),
    _question("eq10-target-view", "eq10", {"target": "online"}),
    _question("eq10-stop-gradient", "eq10", {"grad_terms": "predictor_branch"}),
    _question("eq10-predictor", "eq10", {"predictor": "mlp"}), XBAR_K4,
    _question("eq10-no-out-bn", "eq10", NO_OUT_BN),
    _question("simsiam-target-xbar", "simsiam", {"target": "view_mean"}),
    _question("simsiam-target-feature-mean", "simsiam", FEATURE_MEAN),
    _question("simsiam-l2", "simsiam", {"loss": "l2"}), _question("simsiam-no-out-bn", "simsiam", NO_OUT_BN),
    Cell("H2", "no-predictor", "simsiam-no-pred"),
    _question("eq10-target-feature-mean-stop-gradient", "eq10", {**FEATURE_MEAN, "grad_terms": "predictor_branch"}),
    _question("xbar-no-out-bn", "xbar", NO_OUT_BN)]
# Q1's augmentation axis: the seed's expansion (eq. 8) needs T(x) − x small. Crops from 90 % and 60 %
# of the image beside the default 20 %, and no crop at all (flip and jitter only: averaging in pixel
# space then misaligns nothing), for eq. (10) with either loss, its feature-mean neighbour and SimSiam.
CROPS = {"crop0.9": {"crop_scale_min": 0.9}, "crop0.6": {"crop_scale_min": 0.6}, "no-crop": {"crop_scale_min": 1.0}}
# Q3: a cell whose outcome splits across seeds under SGD, read as P(collapse) over ≥ 20 seeds (the
# linear predictor at α_p = 1 splits under AdamW at width 8; a pilot of its SGD split is the first step).
SPEED_BASIN = [Cell("Q3", "linear-predictor", "simsiam", {"predictor": "linear"}, "bimodal")]
# One configuration run by two grids: Q3's cell is H2c's linear predictor (α_p = 1), so H2c's verdict reads
# Q3's runs too (its 20 SGD seeds at w4), for the seeds H2's own cell has not run (scales.Scale.runs).
SAME_CELL = {"H2/linear-predictor": "Q3/linear-predictor"}
# Q2, f(x) or f(x̄): the encoders read under every test-time input (feature_choice.py): SimSiam (the
# control), BYOL (its recipe, cosine τ) and the best of eq. (10)'s family by final kNN, beside random init.
BYOL_Q2 = Cell("Q2", "byol", "byol", dict(BYOL_RECIPE), "question")
Q2_EQ10 = [FACTORIAL[0], FACTORIAL[1], XBAR_K4]
# Eq. (10)'s own arms are the question ("for which strengths does it collapse?"): 5 seeds, as every Q1 cell.
AUGMENTATION = [Cell("Q1-aug", f"{base.name}-{arm}", base.preset, {**base.overrides, **crop},
                     "question" if base is FACTORIAL[0] else "aug")
                for base in (FACTORIAL[0], XBAR_K4, FACTORIAL[1], CONTROLS[0]) for arm, crop in CROPS.items()]


# The open questions on a lent GPU (`bash bench/gpu_findings.sh OUT questions`): Q3's cell and the Q1 cells
# whose outcomes differ most — eq. (10) as written, without its output BN, with the cosine, its feature-mean
# neighbour, SimSiam with the x̄ target — at the GPU column's scale (width 64, all images, SGD).
GPU_QUESTIONS = [*SPEED_BASIN, FACTORIAL[0], FACTORIAL[6], XBAR_K4, FACTORIAL[1], FACTORIAL[7]]


def grid_cells(grid: str) -> list[Cell]:
    """The runs a grid needs: the controls and its own cells (H7–H9 analyse trained runs)."""
    own = {
        "H1": [],
        "H2": [Cell("H2", "no-predictor", "simsiam-no-pred"),
               Cell("H2", "fixed-random-predictor", "simsiam", {"predictor_lr_scale": 0.0}),
               Cell("H2", "linear-predictor", "simsiam", {"predictor": "linear"}, "bimodal"),
               # H2d: Tian et al. 2021 obs. 1, a larger relative predictor lr α_p shrinks the collapse basin
               Cell("H2", "linear-predictor-lr-x10", "simsiam", {"predictor": "linear", "predictor_lr_scale": 10.0})],
        "H3": _ladder("H3", [(f"byol-tau{tau}", "byol", {**BYOL_RECIPE, "tau": tau, "tau_schedule": "fixed"})
                             for tau in (0.0, 0.9, 0.99, 0.996, 1.0)]) + [BYOL_COSINE, CORE[4]],
        "H4": _ladder("H4", [(f"pred-lr-x{s}", "simsiam", {"predictor_lr_scale": s}) for s in (0.01, 0.1, 10.0)])
        + [Cell("H4", "pred-lr-decayed", "simsiam", {"predictor_fixed_lr": False})],  # binary: H4b
        "H5": [Cell("H5", "term2-only", "simsiam", {"grad_terms": "target_branch"})],
        "H6": _ladder("H6", [(f"xbar-K{k}", "xbar", {"mean_views": k}) for k in (2, 8)]) + [XBAR_K4],
        "H7": FEATURES, "H8": FEATURES[:2], "H9": FEATURES[:1],
        "core": CORE, "long": [CORE[0], CORE[4]],  # fixed random predictor, BYOL τ = 0 at λ = 1
        "Q1": FACTORIAL, "Q1-aug": AUGMENTATION, "Q3": SPEED_BASIN, "Q2": [BYOL_Q2, *Q2_EQ10],
        "Qgpu": GPU_QUESTIONS,
    }
    if grid not in own:
        raise ConfigError(f"unknown experiment {grid!r}; choose one of: {', '.join(GRIDS + EXTRA_GRIDS)} or all")
    # Q2's analysis reads features against a random-init encoder, so of the controls (which place collapse
    # readings) it trains only the one it analyses: SimSiam. Where Q2 runs alone (q-w8) its cells are read for
    # features only (scales.has_controls); every other grid trains all three.
    return (CONTROLS[:1] if grid == "Q2" else CONTROLS) + own[grid]


def analysed_cells(grid: str) -> list[Cell]:
    """The trained encoders the post-hoc analyses H7–H9 read (trained under the features budget)."""
    return {"H7": FEATURES, "H8": FEATURES[:2], "H9": FEATURES[:1], "Q2": [CONTROLS[0], BYOL_Q2, *Q2_EQ10]}[grid]


def cell_budget(cell: Cell, budget: str) -> str:
    """The budget a cell trains under: the analysed encoders' longer one, else the grid's."""
    return FEATURE_BUDGET[budget] if cell.grid == "features" else budget


def seeds_for(cell: Cell, budget: str, seeds: int | None = None) -> int:
    """How many seeds a cell runs: `seeds` if given, else the budget's count for its kind."""
    counts = SEEDS[cell_budget(cell, budget)]
    return seeds if seeds else counts.get(cell.kind, counts["binary"])


GRIDS = tuple(f"H{i}" for i in range(1, 10))
# beyond H1–H9: findings v3's grids and the open questions' (Qgpu: their GPU cells)
EXTRA_GRIDS = ("core", "long", "Q1", "Q1-aug", "Q2", "Q3", "Qgpu")
ANALYSED = ("H7", "H8", "H9", "Q2")  # grids with a post-hoc analysis of their encoders: OUT/<grid>/analysis.json
