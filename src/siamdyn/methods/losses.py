"""Pair losses D(p, t) between a prediction and a target, by config name (`loss=`).

Each loss is a short module stating its paper and formula. Adding one (VICReg, say) is a
class here and a line in `LOSSES`; the config accepts the new name from this registry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

if TYPE_CHECKING:
    from siamdyn.config import Config


def negative_cosine(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, t) = −⟨p/‖p‖, t/‖t‖⟩, averaged over the batch. Range [−1, 1]."""
    return -F.cosine_similarity(p, t, dim=1).mean()


def normalized_mse(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """BYOL's ‖p/‖p‖ − t/‖t‖‖² = 2 − 2·cos(p, t), averaged over the batch. Range [0, 4]."""
    return (2 - 2 * F.cosine_similarity(p, t, dim=1)).mean()


def squared_l2(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Eq. (10) of docs/seed.md as written: ‖p − t‖² on the unnormalised outputs, summed over
    dimensions and averaged over the batch. Unlike the cosine, a constant output reaches 0."""
    return (p - t).pow(2).sum(1).mean()


def info_nce(p: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE (van den Oord 2018; SimCLR with cross-view negatives): cross-entropy of
    cos(p_n, t_m)/T over m, the positive being m = n."""
    logits = F.normalize(p, dim=1) @ F.normalize(t, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(p), device=p.device))


class NegativeCosine(nn.Module):
    """Chen & He 2021 (SimSiam), eq. 1: D(p, z) = −p/‖p‖ · z/‖z‖."""

    def forward(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return negative_cosine(p, t)


class NormalizedMSE(nn.Module):
    """Grill et al. 2020 (BYOL), eq. 2: ‖p̄ − z̄'‖² = 2 − 2·cos(p, z')."""

    def forward(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return normalized_mse(p, t)


class SquaredL2(nn.Module):
    """docs/seed.md eq. (10): D(p, t) = ‖p − t‖², no normalisation."""

    def forward(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return squared_l2(p, t)


class InfoNCE(nn.Module):
    """Chen et al. 2020 (SimCLR) / van den Oord et al. 2018: −log softmax of cos/T at the positive."""

    def __init__(self, temperature: float):
        super().__init__()
        self.temperature = temperature

    def forward(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return info_nce(p, t, self.temperature)


# name → builder from the config.
LOSSES: dict[str, Callable[["Config"], nn.Module]] = {
    "cosine": lambda cfg: NegativeCosine(),
    "mse": lambda cfg: NormalizedMSE(),
    "l2": lambda cfg: SquaredL2(),
    "infonce": lambda cfg: InfoNCE(cfg.temperature),
}
