"""The post-hoc measurements of H7, H8 and H9 on runs the grids trained.

H7  features f(x) vs f(x̄), x̄ = pixel mean of K test-time augmentations (eq. 10's open question)
H8  the deep image prior: raw pixels, random-init encoders under four inits, trained encoders
H9  eqs. (7)–(9): Monte-Carlo mean-target vs pair-target loss, the variance of their minibatch
    gradients, and how good the first-order expansion f(Tx) ≈ f(x) + J(Tx − x) is
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from siamdyn.data import AugmentParams, BatchAugment
from siamdyn.eval import encoder_features, linear_probe, weighted_knn
from siamdyn.experiments.grids import ANALYSIS, BUDGETS, analysed_cells
from siamdyn.methods import SiameseMethod
from siamdyn.probe_run import load_trained
from siamdyn.runtime import eval_input

TEST_TIME_VIEWS = 8


def _scores(cfg, bank: torch.Tensor, train, queries: torch.Tensor, test, epochs: int) -> dict[str, float]:
    knn = weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k, cfg.knn_temperature,
                       num_classes=len(train.classes))
    return {"knn": knn, "linear": linear_probe(bank, train.labels, queries, test.labels, epochs=epochs,
                                               seed=cfg.seed)["linear_test_acc"]}


def _xbar_input(cfg, augment: BatchAugment, k: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ↦ x̄, the pixel mean of k augmentations of x (normalised), drawn from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    return lambda x: torch.stack([augment(x, g) for _ in range(k)]).mean(0).contiguous(memory_format=cfg.memory_format)


def analyse_h7(out: str, budget: str, seeds: int) -> dict[str, Any]:
    epochs = ANALYSIS[budget]["probe_epochs"]
    result: dict[str, Any] = {"test_time_views": TEST_TIME_VIEWS, "runs": {}}
    for cell in analysed_cells("H7"):
        for seed in range(seeds):
            cfg, model, augment, train, test, device, _ = load_trained(cell.run_dir(out, seed))
            row = {}
            for name, prepare in (("f(x)", eval_input(cfg, augment)),
                                  ("f(xbar)", _xbar_input(cfg, augment, TEST_TIME_VIEWS, seed))):
                with torch.no_grad():
                    bank, queries = encoder_features(model.backbone, train.images, test.images, prepare, device)
                row[name] = _scores(cfg, bank, train, queries, test, epochs)
            result["runs"][f"{cell.name}/seed{seed}"] = row
    return result


def analyse_h8(out: str, budget: str, seeds: int) -> dict[str, Any]:
    from siamdyn.config import Config
    from siamdyn.data import channel_stats
    from siamdyn.runtime import load_data, make_augment, setup_torch
    epochs = ANALYSIS[budget]["probe_epochs"]
    cfg = Config.from_preset("simsiam", BUDGETS[budget])
    device = setup_torch(cfg)
    train, test = load_data(cfg)
    pix = [s.images.flatten(1).float() / 255 for s in (train, test)]
    result: dict[str, Any] = {"raw pixels": [_scores(cfg, pix[0], train, pix[1], test, epochs)]}
    mean, std = channel_stats(train.images)
    augment = make_augment(cfg, mean, std, device)
    for init in ("kaiming", "orthogonal", "default", "zero"):
        result[f"random init: {init}"] = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            model = SiameseMethod(cfg.replace(init=init), train.shape[0]).to(
                device, memory_format=cfg.memory_format).eval()
            with torch.no_grad():
                bank, queries = encoder_features(model.backbone, train.images, test.images, eval_input(cfg, augment),
                                                 device)
            result[f"random init: {init}"].append(_scores(cfg, bank, train, queries, test, epochs))
    for cell in analysed_cells("H8"):
        result[f"trained: {cell.name}"] = []
        for seed in range(seeds):
            cfg_r, model, aug_r, tr, te, dev, _ = load_trained(cell.run_dir(out, seed))
            with torch.no_grad():
                bank, queries = encoder_features(model.backbone, tr.images, te.images, eval_input(cfg_r, aug_r), dev)
            result[f"trained: {cell.name}"].append(_scores(cfg_r, bank, tr, queries, te, epochs))
    return result


# ----------------------------------------------------------------------------- H9
def _encoder(model: SiameseMethod) -> Callable[[torch.Tensor], torch.Tensor]:
    """f_θ: backbone + projector in eval mode (BN from running statistics, one image at a time)."""
    return lambda x: model.projector(model.backbone(x))


def _views(augment: BatchAugment, x: torch.Tensor, m: int, g: torch.Generator) -> torch.Tensor:
    return torch.stack([augment(x, g) for _ in range(m)])  # (m, n, C, H, W)


def _losses(f, x: torch.Tensor, augment: BatchAugment, m: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Minibatch estimates: mean-target (eq. 7, target = mean of m views' outputs), pair-target
    (eq. 9, two views) and x̄-target (eq. 10, target = f(pixel mean of m views))."""
    v = _views(augment, x, m, g)
    out = f(v.flatten(0, 1)).view(m, len(x), -1)
    mean_target = (out - out.mean(0, keepdim=True)).pow(2).sum(-1).mean() * m / (m - 1)  # unbiased
    pair = (out[0] - out[1]).pow(2).sum(-1).mean()
    xbar = (out - f(v.mean(0))[None]).pow(2).sum(-1).mean()
    return {"mean_target (7)": mean_target, "pair (9)": pair, "xbar_target (10)": xbar}


def _gradient_variance(model, f, images, augment, m: int, draws: int, batch: int, seed: int) -> dict[str, float]:
    """Relative variance E‖g − ḡ‖² / ‖ḡ‖² of each estimator's minibatch gradient over draws."""
    params = [p for p in list(model.backbone.parameters()) + list(model.projector.parameters())]
    g = torch.Generator().manual_seed(seed)
    grads: dict[str, list[torch.Tensor]] = {}
    for _ in range(draws):
        idx = torch.randperm(len(images), generator=g)[:batch]
        for name, loss in _losses(f, images[idx], augment, m, g).items():
            gr = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            grads.setdefault(name, []).append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                                         for x, p in zip(gr, params)]))
    out = {}
    for name, gs in grads.items():
        stack = torch.stack(gs)
        mean = stack.mean(0)
        out[name] = float((stack - mean).pow(2).sum(1).mean() / mean.pow(2).sum().clamp(min=1e-30))
    return out


def _linearisation_error(f, x: torch.Tensor, augment: BatchAugment, m: int, g: torch.Generator) -> float:
    """Mean over images and views of ‖f(Tx) − f(x) − J(Tx − x)‖ / ‖f(Tx) − f(x)‖."""
    x0 = augment.normalize(x)
    errs = []
    for _ in range(m):
        tx = augment(x, g)
        fx, jvp = torch.func.jvp(f, (x0,), (tx - x0,))
        with torch.no_grad():
            delta = f(tx) - fx
        errs.append((delta - jvp).norm(dim=1) / delta.norm(dim=1).clamp(min=1e-12))
    return float(torch.cat(errs).detach().mean())


def analyse_h9(out: str, budget: str, seeds: int) -> dict[str, Any]:
    a = ANALYSIS[budget]
    result: dict[str, Any] = {"settings": a, "runs": {}}
    for cell in analysed_cells("H9"):
        for seed in range(seeds):
            cfg, trained, run_augment, train, _, device, _ = load_trained(cell.run_dir(out, seed))
            torch.manual_seed(seed)
            initial = SiameseMethod(cfg, train.shape[0]).to(device).eval()  # the run's starting weights
            images = train.images[:a["images"]].to(device)
            for crop in (0.2, 0.6):  # the run's own normalisation, at two crop strengths
                augment = BatchAugment(AugmentParams.from_config(cfg.replace(crop_scale_min=crop)),
                                       run_augment.mean, run_augment.std)
                for when, model in (("init", initial), ("trained", trained.float())):
                    model = model.to(memory_format=torch.contiguous_format)
                    f = _encoder(model)
                    g = torch.Generator().manual_seed(seed)
                    with torch.no_grad():
                        losses = {k: float(v) for k, v in _losses(f, images, augment, a["views"], g).items()}
                    variance = _gradient_variance(model, f, images, augment, a["views"], a["draws"],
                                                  min(32, len(images)), seed)
                    lin = _linearisation_error(f, images[:64], augment, 4, g)
                    result["runs"][f"{cell.name}/seed{seed}/{when}/crop{crop}"] = {
                        "loss": losses, "gradient_relative_variance": variance, "linearisation_rel_error": lin}
    return result
