"""H9, posed so that it can fail: docs/seed.md §6, eqs. (7)–(10), on trained and initial encoders.

Two of the section's statements are identities for independent views and are not tested as
findings: E‖f(T1x) − f(T2x)‖² = 2·E‖f(Tx) − E_T f(Tx)‖² (eq. 9 "doubles" eq. 7), and, per
batch, the mean over all ordered view pairs equals 2·m/(m − 1) times the mean-target loss.
What can fail:
  variance  with the same m views per image, the mean target (eq. 7, all pairs) against m/2
            disjoint pairs and one pair (eq. 9 as a two-view Siamese trains): the relative
            variance of their minibatch gradients (all three estimate the same quantity);
  expansion with crops only (flips, jitter, greyscale, blur off), views x + ε(Tx − x) for
            ε from 0.05 to 1: the first-order error ‖f(x_ε) − f(x) − εJ(Tx − x)‖ / ‖f(x_ε) − f(x)‖
            (→ 0 linearly in ε if eq. 8 holds for weak augmentations), and how far f(x̄) is from
            η* = E_T f(Tx), the target eq. 10 stands in for, relative to the spread of f(Tx).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from siamdyn.data import AugmentParams, BatchAugment
from siamdyn.experiments.grids import ANALYSIS, analysed_cells
from siamdyn.methods import SiameseMethod
from siamdyn.probe_run import load_trained

CROPS_ONLY = dict(flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # T(x) − x from one source
STRENGTHS = (0.05, 0.1, 0.25, 0.5, 1.0)
Encoder = Callable[[torch.Tensor], torch.Tensor]


def scaled_views(augment: BatchAugment, x: torch.Tensor, m: int, eps: float,
                 g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, m views x + ε(Tx − x)) in the network's normalised input space; views (m, n, C, H, W)."""
    x0 = augment.normalize(x)
    return x0, torch.stack([x0 + eps * (augment(x, g) - x0) for _ in range(m)])


def pair_estimators(f: Encoder, views: torch.Tensor) -> dict[str, torch.Tensor]:
    """Three unbiased minibatch estimates of E‖f(T1x) − f(T2x)‖² from the same m views."""
    m, n = views.shape[:2]
    out = f(views.flatten(0, 1)).view(m, n, -1)
    spread = (out - out.mean(0, keepdim=True)).pow(2).sum(-1).mean(0)  # per image, eq. (7)'s inner term
    return {"mean target (7), all pairs": (2 * m / (m - 1) * spread).mean(),
            "disjoint pairs (9)": (out[0:2 * (m // 2):2] - out[1:2 * (m // 2):2]).pow(2).sum(-1).mean(),
            "one pair (9)": (out[0] - out[1]).pow(2).sum(-1).mean()}


def gradient_variance(model: SiameseMethod, f: Encoder, images: torch.Tensor, augment: BatchAugment, m: int,
                      draws: int, batch: int, seed: int) -> dict[str, float]:
    """E‖g − ḡ‖² / ‖ḡ‖² over `draws` minibatches, for each estimator (the same views for all three)."""
    params = list(model.backbone.parameters()) + list(model.projector.parameters())
    g = torch.Generator().manual_seed(seed)
    grads: dict[str, list[torch.Tensor]] = {}
    for _ in range(draws):
        idx = torch.randperm(len(images), generator=g)[:batch]
        _, views = scaled_views(augment, images[idx], m, 1.0, g)
        for name, loss in pair_estimators(f, views).items():
            gr = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            grads.setdefault(name, []).append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                                         for x, p in zip(gr, params)]))
    out = {}
    for name, gs in grads.items():
        stack = torch.stack(gs)
        mean = stack.mean(0)
        out[name] = float((stack - mean).pow(2).sum(1).mean() / mean.pow(2).sum().clamp(min=1e-30))
    return out


def expansion_at(f: Encoder, x: torch.Tensor, augment: BatchAugment, m: int, eps: float,
                 seed: int) -> dict[str, float]:
    """First-order error of eq. (8) and the x̄ gap of eq. (10) at strength ε."""
    g = torch.Generator().manual_seed(seed)
    x0, views = scaled_views(augment, x, m, eps, g)
    errs = []
    for v in views:
        fx, jvp = torch.func.jvp(f, (x0,), (v - x0,))
        with torch.no_grad():
            delta = f(v) - fx
        errs.append(((delta - jvp).norm(dim=1) / delta.norm(dim=1).clamp(min=1e-12)).detach())
    with torch.no_grad():
        out = f(views.flatten(0, 1)).view(m, len(x), -1)
        eta = out.mean(0)  # η* = E_T f(Tx), Monte Carlo over the m views
        spread = (out - eta).pow(2).sum(-1).mean(0)
        gap = (f(views.mean(0)) - eta).pow(2).sum(-1)
    return {"linearisation_rel_error": float(torch.cat(errs).mean()),
            "xbar_gap_over_spread": float((gap / spread.clamp(min=1e-12)).mean())}


def analyse_h9(out: str, budget: str, seeds: int) -> dict[str, Any]:
    a = ANALYSIS[budget]
    result: dict[str, Any] = {"settings": a, "strengths": list(STRENGTHS), "runs": {}}
    for cell in analysed_cells("H9"):
        for seed in range(seeds):
            cfg, trained, run_augment, train, _, device, _ = load_trained(cell.run_dir(out, seed))
            torch.manual_seed(seed)
            initial = SiameseMethod(cfg, train.shape[0]).to(device).eval()  # the run's starting weights
            images = train.images[:a["images"]].to(device)
            augment = BatchAugment(AugmentParams.from_config(cfg.replace(**CROPS_ONLY)), run_augment.mean,
                                   run_augment.std)
            for when, model in (("init", initial), ("trained", trained.float())):
                model = model.to(memory_format=torch.contiguous_format)
                f = lambda x, model=model: model.projector(model.backbone(x))  # noqa: E731 — f_θ, eval mode
                result["runs"][f"{cell.name}/seed{seed}/{when}"] = {
                    "gradient_relative_variance": gradient_variance(model, f, images, augment, a["views"],
                                                                    a["draws"], min(32, len(images)), seed),
                    "by_strength": {str(eps): expansion_at(f, images[:64], augment, 4, eps, seed)
                                    for eps in STRENGTHS}}
    return result
