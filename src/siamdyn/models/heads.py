"""Projection and prediction heads, each a short module named after its paper."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch.nn as nn

if TYPE_CHECKING:
    from siamdyn.config import Config


def simsiam_projector(in_dim: int, hidden: int, out: int, out_bn: bool = True) -> nn.Sequential:
    """SimSiam (Chen & He 2021): 3 × (Linear, BN), ReLU between; the last BN has no affine
    parameters so the output z is centred and scaled per dimension. `out_bn=False` ends in a
    plain Linear (with bias): only then can z be one constant vector, i.e. collapse completely."""
    last = ([nn.Linear(hidden, out, bias=False), nn.BatchNorm1d(out, affine=False)] if out_bn
            else [nn.Linear(hidden, out)])
    return nn.Sequential(
        nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), *last)


def byol_mlp(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    """BYOL (Grill et al. 2020) projector and predictor: Linear, BN, ReLU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out))


def simsiam_predictor(dim: int, hidden: int) -> nn.Sequential:
    """SimSiam predictor h: a bottleneck (dim → hidden → dim), BN + ReLU in the middle."""
    return nn.Sequential(nn.Linear(dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, dim))


def linear_predictor(dim: int) -> nn.Linear:
    """DirectPred-style (Tian et al. 2021) linear predictor p = W_p z, no bias."""
    return nn.Linear(dim, dim, bias=False)


# name → builder (input dim, cfg). The config accepts exactly these names (`projector=`, `predictor=`).
PROJECTORS: dict[str, Callable[[int, "Config"], nn.Module]] = {
    "simsiam": lambda dim, cfg: simsiam_projector(dim, cfg.proj_hidden, cfg.proj_dim),
    "byol": lambda dim, cfg: byol_mlp(dim, cfg.proj_hidden, cfg.proj_dim),
    "simsiam-no-out-bn": lambda dim, cfg: simsiam_projector(dim, cfg.proj_hidden, cfg.proj_dim, out_bn=False),
}
# The mlp predictor takes the shape of its projector's paper: SimSiam's bottleneck or BYOL's MLP.
PREDICTORS: dict[str, Callable[[int, "Config"], nn.Module]] = {
    "mlp": lambda dim, cfg: (simsiam_predictor(dim, cfg.pred_hidden) if cfg.projector.startswith("simsiam")
                             else byol_mlp(dim, cfg.pred_hidden, dim)),
    "linear": lambda dim, cfg: linear_predictor(dim),
    "none": lambda dim, cfg: nn.Identity(),
}
