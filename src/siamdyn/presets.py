"""Named points of the design space (presets) and the training recipe `siamdyn train` uses.

A preset is a dict of overrides on `Config`'s defaults (docs/design.md §1). A recipe is a
further dict applied over the preset when training on a dataset it was tuned for; the
study that chose each value, with its numbers, is docs/recipe.md.
"""
from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Chen & He 2021: predictor, stop-gradient, negative cosine, ½(D(p1,z2) + D(p2,z1)).
    "simsiam": {},
    # Grill et al. 2020: EMA target (τ 0.99 → 1), 2 − 2cos summed over both orders, the
    # predictor's lr decays with the rest.
    "byol": dict(target="ema", tau=0.99, tau_schedule="cosine", loss="mse", symmetrize="sum",
                 projector="byol", proj_hidden=512, proj_dim=128, pred_hidden=512,
                 predictor_fixed_lr=False),
    # SimSiam without stop-gradient: terms 1 + 2 of docs/seed.md §3 reach the encoder.
    "simsiam-no-sg": dict(grad_terms="both"),
    # SimSiam without predictor (h = identity), stop-gradient kept.
    "simsiam-no-pred": dict(predictor="none"),
    # Plain Siamese: no predictor and no stop-gradient, eq. (9).
    "siamese": dict(predictor="none", grad_terms="both"),
    # Eq. (10): target f(x̄), x̄ = pixel mean of K augmentations; no predictor, no stop-gradient.
    "xbar": dict(predictor="none", target="view_mean", grad_terms="both"),
    # Eq. (10) as written: the same, with the unnormalised squared distance instead of the cosine.
    "eq10": dict(predictor="none", target="view_mean", grad_terms="both", loss="l2"),
    # SimCLR, the contrastive reference: InfoNCE with cross-view negatives.
    "simclr": dict(predictor="none", grad_terms="both", loss="infonce", symmetrize="mean",
                   projector="byol", proj_dim=128),
}

# The fmnist-small recipe per preset (docs/recipe.md "Recipe" has the evidence for each value).
# `Config.from_preset` keeps the papers' settings, which the experiment grids, the demo and
# the tests build on; `siamdyn train` applies these over them (`--paper-recipe` does not).
FMNIST_RECIPE: dict[str, dict[str, Any]] = {
    "simsiam": dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.2),
    "byol": dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, crop_scale_min=0.5, predictor_lr_scale=10.0),
    "simclr": dict(lr=0.5, crop_scale_min=0.5),
}
RECIPES: dict[str, dict[str, dict[str, Any]]] = {"fashion-mnist": FMNIST_RECIPE}

# Raw-pixel kNN on the full splits (weighted k = 200, T = 0.1; plain euclidean 5-NN), measured
# by `siamdyn baseline`: the default time-to-accuracy targets (docs/recipe.md).
RAW_PIXEL_KNN: dict[str, tuple[float, ...]] = {"fashion-mnist": (78.85, 85.54)}


def recipe_overrides(preset: str, dataset: str) -> dict[str, Any]:
    """The recipe for `preset` on `dataset` ({} where none was tuned)."""
    return dict(RECIPES.get(dataset, {}).get(preset, {}))
