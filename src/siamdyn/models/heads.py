"""Projection and prediction heads, each a short module named after its paper."""
from __future__ import annotations

import torch.nn as nn


def simsiam_projector(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """SimSiam (Chen & He 2021): 3 × (Linear, BN), ReLU between; the last BN has no affine
    parameters so the output z is centred and scaled per dimension."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out, affine=False),
    )


def byol_mlp(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """BYOL (Grill et al. 2020) projector and predictor: Linear, BN, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out))


def simsiam_predictor(dim: int, hidden: int) -> nn.Sequential:
    """SimSiam predictor h: a bottleneck (dim → hidden → dim), BN + ReLU in the middle."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


def linear_predictor(dim: int) -> nn.Linear:
    """DirectPred-style (Tian et al. 2021) linear predictor p = W_p z, no bias."""
    return nn.Linear(dim, dim, bias=False)
