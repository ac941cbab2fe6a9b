"""The post-hoc measurements of H7, H8 and H9 on runs the grids trained.

H7  features f(x) vs f(x̄), x̄ = pixel mean of K test-time augmentations (eq. 10's open question)
H8  the deep image prior: raw pixels, random-init encoders under four inits, trained encoders
H9  eqs. (7)–(10): in expansion.py (re-exported here for the runner)
Q2  f(x) or f(x̄), asked fairly: every test-time input of feature_choice.py (docs/open_questions.md)
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from siamdyn.data import BatchAugment
from siamdyn.eval import encoder_features, linear_probe, weighted_knn
from siamdyn.experiments.expansion import analyse_h9  # noqa: F401 — the runner finds every analysis here
from siamdyn.experiments.grids import ANALYSIS, BUDGETS, CONTROLS, Q2_EQ10, analysed_cells
from siamdyn.methods import SiameseMethod
from siamdyn.probe_run import load_trained
from siamdyn.runtime import eval_input

TEST_TIME_VIEWS = 8


def _scores(cfg, bank: torch.Tensor, train, queries: torch.Tensor, test, epochs: int) -> dict[str, float]:
    knn = weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k, cfg.knn_temperature,
                       num_classes=len(train.classes))
    return {"knn": knn, "linear": linear_probe(bank, train.labels, queries, test.labels, epochs=epochs,
                                               seed=cfg.seed)["linear_test_acc"], "dim": bank.shape[1]}


def _xbar_input(cfg, augment: BatchAugment, k: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ↦ x̄, the pixel mean of k augmentations of x (normalised), drawn from a fixed seed."""
    from siamdyn.experiments.feature_choice import pixel_mean
    mean = pixel_mean(augment, k, torch.Generator(device=augment.mean.device).manual_seed(seed))
    return lambda x: mean(x).contiguous(memory_format=cfg.memory_format)


def analyse_h7(out: str, budget: str, seeds: int) -> dict[str, Any]:
    epochs = ANALYSIS[budget]["probe_epochs"]
    result: dict[str, Any] = {"test_time_views": TEST_TIME_VIEWS, "runs": {}}
    cells = analysed_cells("H7")
    for cell in [None, *cells]:  # None: a random-init encoder, the bar the trained ones must clear
        for seed in range(seeds):
            cfg, model, augment, train, test, device, _ = load_trained((cell or cells[0]).run_dir(out, seed))
            if cell is None:
                torch.manual_seed(seed)
                model = SiameseMethod(cfg, train.shape[0]).to(device, memory_format=cfg.memory_format).eval()
            row = {}
            for name, prepare in (("f(x)", eval_input(cfg, augment)),
                                  ("f(xbar)", _xbar_input(cfg, augment, TEST_TIME_VIEWS, seed))):
                with torch.no_grad():
                    bank, queries = encoder_features(model.backbone, train.images, test.images, prepare, device)
                row[name] = _scores(cfg, bank, train, queries, test, epochs)
            result["runs"][f"{cell.name if cell else 'random init'}/seed{seed}"] = row
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


def best_eq10(out: str, seeds: int) -> Any:
    """The eq. (10) family's cell with the highest mean final kNN over its first `seeds` runs."""
    from siamdyn.experiments.readings import load_run
    def knn(cell) -> float:
        runs = [r for s in range(seeds) if (r := load_run(cell.run_dir(out, s))) is not None]
        accs = [r.summary["final_knn_acc"] for r in runs if r.summary.get("final_knn_acc") is not None]
        return sum(accs) / len(accs) if accs else float("-inf")
    return max(Q2_EQ10, key=knn)


def analyse_q2(out: str, budget: str, seeds: int) -> dict[str, Any]:
    from siamdyn.experiments.feature_choice import read_encoder
    from siamdyn.experiments.grids import BYOL_Q2
    epochs = ANALYSIS.get(budget, ANALYSIS["standard"])["probe_epochs"]  # Q2 runs at any budget
    eq10 = best_eq10(out, seeds)
    result: dict[str, Any] = {"best eq10 cell (by final kNN)": eq10.name, "runs": {}, "blur sigma": {}}
    for cell in [None, CONTROLS[0], BYOL_Q2, eq10]:  # None: random init, on the control's data and augmentation
        for seed in range(seeds):
            cfg, model, augment, train, test, device, _ = load_trained((cell or CONTROLS[0]).run_dir(out, seed))
            if cell is None:
                torch.manual_seed(seed)
                model = SiameseMethod(cfg, train.shape[0]).to(device, memory_format=cfg.memory_format).eval()
            score = lambda bank, q, cfg=cfg, train=train, test=test: _scores(cfg, bank, train, q, test, epochs)  # noqa: E731
            key = f"{cell.name if cell else 'random init'}/seed{seed}"
            result["runs"][key], result["blur sigma"][key] = read_encoder(model.backbone, cfg, augment, train, test,
                                                                        seed, score)
    return result
