"""Collapse metrics. The SimSiam paper's (fig. 2) measure: the std over a batch of each
dimension of the L2-normalised output, averaged over dimensions. For unit vectors spread
isotropically it is ≈ 1/√d; a collapsed (constant) output gives 0."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSE_FRACTION = 0.25  # a run counts as collapsed below 0.25/√d (DESIGN.md, issue 3)
HEALTHY_FRACTION = 0.8


@torch.no_grad()
def normalized_std(z: torch.Tensor) -> tuple[float, float]:
    """(mean, min) over dimensions of the per-dimension std of z/‖z‖ over the batch."""
    std = F.normalize(z.float(), dim=1).std(dim=0)
    return std.mean().item(), std.min().item()


def collapse_threshold(dim: int, fraction: float = COLLAPSE_FRACTION) -> float:
    return fraction / math.sqrt(dim)


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values
    of the (N, d) embedding matrix. Between 1 (rank one) and min(N, d)."""
    s = torch.linalg.svdvals(x.float())
    p = s / s.sum().clamp(min=1e-12)
    return float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()))
