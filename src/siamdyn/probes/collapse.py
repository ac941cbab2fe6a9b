"""Collapse metrics and the collapse detector.

The SimSiam paper's (fig. 2) measure: the std over a batch of each dimension of the
L2-normalised output, averaged over dimensions. For unit vectors spread isotropically it
is ≈ 1/√d; a collapsed (constant) output gives 0. RankMe catches dimensional collapse
(all outputs on a line) that the std can miss; alignment/uniformity (Wang & Isola 2020)
and the two mean cosines say whether views agree *because* everything agrees.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

COLLAPSE_FRACTION = 0.25  # a run counts as collapsed below 0.25/√d (DESIGN.md, issue 3)
HEALTHY_FRACTION = 0.8
RANK_FLOOR = 2.0  # RankMe(z) below this = (near) rank-one embeddings; healthy runs measured ≥ 10


# Each metric returns 0-d tensors: nothing waits for the device, so `collapse_metrics` can
# fetch all ten numbers of a training step in one host sync (it was ten, plus an SVD, per
# step: a third of the step time of a width-16 ResNet-18 on a GPU, bench/results/).
@torch.no_grad()
def normalized_std(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, min) over dimensions of the per-dimension std of z/‖z‖ over the batch."""
    std = F.normalize(z.float(), dim=1).std(dim=0)
    return std.mean(), std.min()


def collapse_threshold(dim: int, fraction: float = COLLAPSE_FRACTION) -> float:
    return fraction / math.sqrt(dim)


@torch.no_grad()
def effective_rank(x: torch.Tensor) -> torch.Tensor:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalised singular values
    of the (N, d) embedding matrix. Between 1 (rank one) and min(N, d).

    The singular values are the square roots of the eigenvalues of the smaller Gram matrix
    (in float64, so squaring loses nothing that the entropy would see): a symmetric
    eigensolver is several times cheaper than an SVD, on a GPU especially."""
    x = x.double()
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    s = torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()
    p = s / s.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum()).float()


@torch.no_grad()
def alignment(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Wang & Isola (2020) alignment, α = 2: E‖ẑ1 − ẑ2‖² over positive pairs (0 = perfect)."""
    return (F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)).pow(2).sum(1).mean()


@torch.no_grad()
def uniformity(z: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Wang & Isola (2020) uniformity: log E_{i≠j} exp(−t‖ẑi − ẑj‖²). 0 when collapsed,
    more negative when spread over the sphere (≈ −4 for many points in high dimension)."""
    sq = torch.pdist(F.normalize(z.float(), dim=1)).pow(2)
    return torch.logsumexp(-t * sq, 0) - math.log(sq.numel())


@torch.no_grad()
def mean_cosines(z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cos between the two views of an image, mean cos between different images).
    A collapsed encoder has both near 1; a healthy one has the first high, the second low."""
    a, b = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    gram = a @ a.T
    n = len(a)
    between = (gram.sum() - gram.diagonal().sum()) / max(1, n * (n - 1))
    return (a * b).sum(1).mean(), between


def collapse_metrics(z: list[torch.Tensor], p: list[torch.Tensor], features: torch.Tensor) -> dict[str, float]:
    """Every per-step collapse number for one batch: z and p are the two views' outputs."""
    z_std, z_std_min = normalized_std(z[0])
    p_std, p_std_min = normalized_std(p[0])
    cos_views, cos_images = mean_cosines(z[0], z[1])
    metrics = {"z_std": z_std, "z_std_min": z_std_min, "p_std": p_std, "p_std_min": p_std_min,
               "z_erank": effective_rank(z[0]), "feature_erank": effective_rank(features),
               "alignment": alignment(z[0], z[1]), "uniformity": uniformity(z[0]),
               "cos_views": cos_views, "cos_images": cos_images}
    return dict(zip(metrics, torch.stack([v.float() for v in metrics.values()]).tolist()))  # one host sync


class CollapseDetector:
    """Flags collapse: min(std of z, std of p) < fraction/√d, or RankMe(z) < rank_floor, held
    for `patience` consecutive steps (counted in steps, whatever log_every is); `step` is the
    first step of that streak.

    Both z and p count: SimSiam's projector ends in a BN, which keeps z from becoming
    constant, so a collapse can show in p (no BN at its end) before it shows in z. The
    patience ignores transient dips: BYOL's p std dips to ≈ 0.2/√d for ~10–30 steps early
    in training and recovers (measured: runs/fmnist5_byol, kNN 72.6 % after 5 epochs).
    """

    def __init__(self, dim: int, fraction: float = COLLAPSE_FRACTION, rank_floor: float = RANK_FLOOR,
                 patience: int = 1):
        self.threshold = collapse_threshold(dim, fraction)
        self.rank_floor = rank_floor
        self.patience = max(1, patience)
        self.step: int | None = None
        self.reason: str | None = None
        self._streak: tuple[int, str] | None = None  # (first step, reason) of the current run below

    def below(self, metrics: dict[str, float]) -> str | None:
        """Why these metrics count as collapsed, or None."""
        std = min(metrics["z_std"], metrics.get("p_std", metrics["z_std"]))
        if std < self.threshold:
            return f"std {std:.4f} < {self.threshold:.4f}"
        if self.rank_floor and metrics["z_erank"] < self.rank_floor:
            return f"RankMe(z) {metrics['z_erank']:.2f} < {self.rank_floor}"
        return None

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Feed one step's metrics; True exactly once, on the step the detector fires."""
        if self.step is not None:
            return False
        why = self.below(metrics)
        if why is None:
            self._streak = None
            return False
        if self._streak is None:
            self._streak = (step, why)
        start, first_why = self._streak
        if step - start + 1 < self.patience:
            return False
        self.step, self.reason = start, first_why + (f", held {self.patience} steps" if self.patience > 1 else "")
        return True
