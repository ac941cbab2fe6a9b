"""Optimisers and schedules: SGD / LARS / AdamW over the method's parameter groups, the lr
(linear warm-up, then cosine) and BYOL's EMA τ."""
from __future__ import annotations

import math

import torch

from siamdyn.config import Config


class LARS(torch.optim.SGD):
    """LARS (You et al. 2017) as BYOL uses it: SGD with momentum whose step for each weight
    matrix is scaled by the trust ratio η‖w‖ / ‖∇w + λw‖. Biases and BatchNorm parameters
    (1-d) get plain SGD without weight decay, as in BYOL."""

    def __init__(self, params, lr: float, momentum: float, weight_decay: float, eta: float = 0.001):  # noqa: ANN001
        self.eta = eta
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=0.0)
        self.lars_weight_decay = weight_decay

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 — torch.optim's signature
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None or p.dim() == 1:
                    continue
                p.grad.add_(p, alpha=self.lars_weight_decay)
                w, g = p.norm(), p.grad.norm()
                trust = torch.where((w > 0) & (g > 0), self.eta * w / g, torch.ones_like(w))
                p.grad.mul_(trust)
        return super().step(closure)


def build_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """The optimiser of `cfg` over `model.param_groups()` (each group: params, fixed_lr, lr_scale)."""
    groups = model.param_groups()
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.scaled_lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lars":
        return LARS(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.scaled_lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(cfg: Config, step: int, total: int, steps_per_epoch: int) -> float:
    """Linear warm-up for `warmup_epochs`, then a cosine from 1 to 0 over the rest."""
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, cfg: Config, factor: float) -> None:
    """Scheduled groups follow `factor`; `fixed_lr` groups (SimSiam's predictor) do not."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.scaled_lr * group["lr_scale"] * (1.0 if group["fixed_lr"] else factor)


def ema_tau(cfg: Config, step: int, total_steps: int) -> float:
    """BYOL's schedule τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, or τ_base when fixed."""
    if cfg.tau_schedule == "fixed" or total_steps <= 0:
        return cfg.tau
    return 1 - (1 - cfg.tau) * (math.cos(math.pi * step / total_steps) + 1) / 2
