"""The gradient split of SEED_NOTES §3 and module speeds, read at probe steps.

g1 is the encoder gradient that flows through the predictor branch (term 1), g2 the one
that flows through the target branch (term 2), computed for *any* method whatever its
own `grad_terms`: for a stop-gradient method g2 is the force it removes. For an `ema`
target, g2 is taken as if the target were the online network (τ = 0), the force
stop-gradient removes from SimSiam; an EMA target never receives gradient itself.

Probes never change the trajectory: the extra forward passes update BatchNorm running
statistics, so those buffers are restored afterwards, and no parameter is touched.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from siamdyn.distributed import Dist, mean_over_ranks
from siamdyn.methods import SiameseMethod

ENCODER_GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4", "projector")


@contextlib.contextmanager
def frozen_buffers(model: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer (BN running mean/var, counters) on exit."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def _flat(grads: list[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def gradient_split(model: SiameseMethod, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                   ctx: Dist = Dist()) -> dict[str, float]:
    """‖g1‖, ‖g2‖, cos(g1, g2), ‖g2‖/‖g1‖ per encoder group and in total, and ‖∂l/∂p‖.
    Under DDP each rank's local-batch gradients are averaged, which gives the gradients of
    the global-batch loss (the mean of the ranks' losses), as in training."""
    groups = model.module_groups()
    params = {name: [p for p in groups[name].parameters() if p.requires_grad] for name in ENCODER_GROUPS}
    flat_params = [p for name in ENCODER_GROUPS for p in params[name]]
    sizes = [sum(p.numel() for p in params[name]) for name in ENCODER_GROUPS]
    target = "online" if model.cfg.target == "ema" else None
    split = {}
    with frozen_buffers(model):
        for term, grad_terms in (("g1", "predictor_branch"), ("g2", "target_branch")):
            out = model(views, xbar, grad_terms=grad_terms, target=target)
            inputs = flat_params + (out.p if term == "g1" else [])
            grads = torch.autograd.grad(out.loss, inputs, allow_unused=True)
            split[term] = mean_over_ranks(ctx, _flat(list(grads[:len(flat_params)]), flat_params))
            if term == "g1":
                # ∂l/∂p: the seed's ∂L/∂h factor that both dφ/dt and term 1 carry. Globally
                # ∂L/∂p = ∂l_r/∂p / world on rank r's rows, so ‖∂L/∂p‖² = mean_r ‖∂l_r/∂p‖² / world.
                dl_dp = torch.cat([g.flatten() for g in grads[len(flat_params):] if g is not None] or [torch.zeros(0)])
                dl_dp_sq = mean_over_ranks(ctx, dl_dp.pow(2).sum()) / ctx.world
    record = {"dl_dp_norm": float(dl_dp_sq.sqrt())} if dl_dp.numel() else {}
    for name, chunk1, chunk2 in zip(("total",) + ENCODER_GROUPS, (split["g1"],) + split["g1"].split(sizes),
                                    (split["g2"],) + split["g2"].split(sizes)):
        n1, n2 = float(chunk1.norm()), float(chunk2.norm())
        suffix = "" if name == "total" else f"/{name}"
        record[f"g1_norm{suffix}"] = n1
        record[f"g2_norm{suffix}"] = n2
        record[f"g2_over_g1{suffix}"] = n2 / n1 if n1 > 0 else float("inf")
        record[f"cos_g1_g2{suffix}"] = float(F.cosine_similarity(chunk1, chunk2, dim=0)) if n1 > 0 and n2 > 0 else 0.0
    return record


def snapshot(model: SiameseMethod) -> dict[str, torch.Tensor]:
    """Flat copies of each module group's parameters, to measure the next update."""
    return {name: torch.cat([p.detach().flatten() for p in m.parameters()]).clone()
            for name, m in model.module_groups().items()}


def module_speeds(model: SiameseMethod, before: dict[str, torch.Tensor]) -> dict[str, float]:
    """Relative update size ‖Δw‖/‖w‖ of each module group since `before`."""
    out = {}
    for name, m in model.module_groups().items():
        now = torch.cat([p.detach().flatten() for p in m.parameters()])
        out[f"speed/{name}"] = float((now - before[name]).norm() / before[name].norm().clamp(min=1e-12))
    return out
