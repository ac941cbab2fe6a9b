"""The gradient split of docs/seed.md §3 and module speeds, over named parameter groups.

g1 is the encoder gradient that flows through the predictor branch (term 1), g2 the one
that flows through the target branch (term 2), computed for *any* method whatever its
own `grad_terms`: for a stop-gradient method g2 is the force it removes. For an `ema`
target, g2 is taken as if the target were the online network (τ = 0), the force
stop-gradient removes from SimSiam; an EMA target never receives gradient itself.

Groups are `{name: module or list of parameters}`, input to output: a `SiameseMethod`
gives its backbone's parts (siamdyn's ResNet: stem, stage1..4) and the projector; any
other loop passes its own (`split_gradient`, `ModuleSpeeds`).

Probes never change the trajectory: the extra forward passes update BatchNorm running
statistics, so those buffers are restored afterwards, and no parameter is touched.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.distributed import Dist, mean_over_ranks

Group = Union[nn.Module, Iterable[torch.Tensor]]


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


def group_params(groups: dict[str, Group]) -> dict[str, list[torch.Tensor]]:
    """The trainable parameters of each named group."""
    out = {}
    for name, g in groups.items():
        params = g.parameters() if isinstance(g, nn.Module) else g
        out[name] = [p for p in params if p.requires_grad]
    return out


def _flat(grads: Iterable[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def split_record(g1: torch.Tensor, g2: torch.Tensor, sizes: dict[str, int]) -> dict[str, float]:
    """‖g1‖, ‖g2‖, ‖g2‖/‖g1‖ and cos(g1, g2) in total and per group, from flat gradients."""
    record = {}
    chunks = zip(("total",) + tuple(sizes), (g1,) + g1.split(list(sizes.values())),
                 (g2,) + g2.split(list(sizes.values())))
    for name, c1, c2 in chunks:
        n1, n2 = float(c1.norm()), float(c2.norm())
        suffix = "" if name == "total" else f"/{name}"
        record[f"g1_norm{suffix}"] = n1
        record[f"g2_norm{suffix}"] = n2
        record[f"g2_over_g1{suffix}"] = n2 / n1 if n1 > 0 else float("inf")
        record[f"cos_g1_g2{suffix}"] = float(F.cosine_similarity(c1, c2, dim=0)) if n1 > 0 and n2 > 0 else 0.0
    return record


def split_gradient(term1_loss: torch.Tensor, term2_loss: torch.Tensor, groups: dict[str, Group]) -> dict[str, float]:
    """The gradient split for any training loop: `term1_loss` is the loss with the target
    detached (gradient through the predictor only), `term2_loss` the loss with the predictor's
    input detached (gradient through the target only), e.g. for SimSiam
    `D(h(z1), z2.detach())` and `D(h(z1.detach()), z2)`. Leaves `.grad` untouched."""
    params = group_params(groups)
    flat = [p for ps in params.values() for p in ps]
    sizes = {name: sum(p.numel() for p in ps) for name, ps in params.items()}
    g1 = _flat(torch.autograd.grad(term1_loss, flat, retain_graph=True, allow_unused=True), flat)
    g2 = _flat(torch.autograd.grad(term2_loss, flat, allow_unused=True), flat)
    return split_record(g1, g2, sizes)


def gradient_split(model: nn.Module, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                   ctx: Dist = Dist(), groups: dict[str, Group] | None = None) -> dict[str, float]:
    """The split for a `SiameseMethod` (any backbone) on one batch, and ‖∂l/∂p‖. Under DDP each
    rank's local-batch gradients are averaged, which gives the gradients of the global-batch
    loss (the mean of the ranks' losses), as in training."""
    params = group_params(groups or model.encoder_groups())
    flat_params = [p for ps in params.values() for p in ps]
    sizes = {name: sum(p.numel() for p in ps) for name, ps in params.items()}
    target = "online" if model.cfg.target == "ema" else None
    split = {}
    with frozen_buffers(model):
        for term, grad_terms in (("g1", "predictor_branch"), ("g2", "target_branch")):
            out = model(views, xbar, grad_terms=grad_terms, target=target)
            inputs = flat_params + (out.p if term == "g1" else [])
            grads = torch.autograd.grad(out.loss, inputs, allow_unused=True)
            split[term] = mean_over_ranks(ctx, _flat(grads[:len(flat_params)], flat_params))
            if term == "g1":
                # ∂l/∂p: the seed's ∂L/∂h factor that both dφ/dt and term 1 carry. Globally
                # ∂L/∂p = ∂l_r/∂p / world on rank r's rows, so ‖∂L/∂p‖² = mean_r ‖∂l_r/∂p‖² / world.
                dl_dp = torch.cat([g.flatten() for g in grads[len(flat_params):] if g is not None] or [torch.zeros(0)])
                dl_dp_sq = mean_over_ranks(ctx, dl_dp.float().pow(2).sum()) / ctx.world
    record = {"dl_dp_norm": float(dl_dp_sq.sqrt())} if dl_dp.numel() else {}
    return {**record, **split_record(split["g1"], split["g2"], sizes)}


class ModuleSpeeds:
    """Relative update size ‖Δw‖/‖w‖ of each named group: `snapshot()` before the optimiser
    step, `measure()` after (docs/seed.md §3 (b): the predictor should move fastest)."""

    def __init__(self, groups: dict[str, Group]):
        self.params = group_params(groups)
        self._before: dict[str, torch.Tensor] = {}

    def _flat(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat([p.detach().flatten() for p in ps]).clone() for name, ps in self.params.items() if ps}

    def snapshot(self) -> None:
        self._before = self._flat()

    def measure(self) -> dict[str, float]:
        now = self._flat()
        return {f"speed/{name}": float((now[name] - w).norm() / w.norm().clamp(min=1e-12))
                for name, w in self._before.items()}


def snapshot(model: nn.Module) -> ModuleSpeeds:
    """Start measuring the next update of a `SiameseMethod`'s module groups."""
    speeds = ModuleSpeeds(model.module_groups())
    speeds.snapshot()
    return speeds


def module_speeds(model: nn.Module, before: ModuleSpeeds) -> dict[str, float]:
    """‖Δw‖/‖w‖ per module group since `snapshot(model)` gave `before`."""
    return before.measure()
