"""Targets t_j of the loss D(p_i, t_j), by config name (`target=`).

A target says three things: which extra augmented views of each image it needs beyond
the two online ones (`extra_views`, and how they become one input: `combine`), which
(online, target) module pairs an EMA keeps in step (`ema_pairs`), and how the targets of
a batch are made (`make`). The method and the training loop ask it; neither checks names.
A stateful target (DINO's centring, say) keeps its state in modules it adds in `build`.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from siamdyn.methods.siamese import SiameseMethod


class Target:
    """The online network's own projector output (SimSiam): t_j = z_j, behind a
    stop-gradient unless term 2 is on (docs/seed.md §3)."""

    # Ordered (online view i, target j) pairs of the loss: both orders of the two views.
    pairs: tuple[tuple[int, int], ...] = ((0, 1), (1, 0))

    def extra_views(self, method: "SiameseMethod") -> int:
        return 0

    def combine(self, extra: list[torch.Tensor]) -> torch.Tensor | None:
        """The extra input the target is computed from, out of `extra_views` augmentations."""
        return None

    def build(self, method: "SiameseMethod") -> None:
        """Add any modules the target owns to `method` (after the online network exists)."""

    def ema_pairs(self, method: "SiameseMethod") -> list[tuple[nn.Module, nn.Module]]:
        return []

    def make(self, method: "SiameseMethod", views: list[torch.Tensor], zs: list[torch.Tensor],
             extra: torch.Tensor | None, term2: bool) -> list[torch.Tensor]:
        return [z if term2 else z.detach() for z in zs]


class EMATarget(Target):
    """BYOL (Grill et al. 2020): a copy of backbone + projector, ξ ← τξ + (1 − τ)θ, that
    never receives gradient."""

    def build(self, method: "SiameseMethod") -> None:
        method.target_backbone = copy.deepcopy(method.backbone).requires_grad_(False)
        method.target_projector = copy.deepcopy(method.projector).requires_grad_(False)

    def ema_pairs(self, method: "SiameseMethod") -> list[tuple[nn.Module, nn.Module]]:
        return [(method.backbone, method.target_backbone), (method.projector, method.target_projector)]

    def make(self, method: "SiameseMethod", views: list[torch.Tensor], zs: list[torch.Tensor],
             extra: torch.Tensor | None, term2: bool) -> list[torch.Tensor]:
        with torch.no_grad():
            return method.per_view(lambda v: method.target_projector(method.target_backbone(v)), views)


class ViewMeanTarget(Target):
    """Eq. (10) of docs/seed.md: t = f(x̄), the online encoder applied to x̄, the pixel mean
    of K = `mean_views` augmentations of the image; each online view is paired with it."""

    pairs = ((0, 0), (1, 0))

    def extra_views(self, method: "SiameseMethod") -> int:
        return method.cfg.mean_views

    def combine(self, extra: list[torch.Tensor]) -> torch.Tensor | None:
        return torch.stack(extra).mean(0)

    def make(self, method: "SiameseMethod", views: list[torch.Tensor], zs: list[torch.Tensor],
             extra: torch.Tensor | None, term2: bool) -> list[torch.Tensor]:
        if extra is None:
            raise ValueError("target=view_mean needs the x̄ batch (its extra views)")
        with torch.set_grad_enabled(term2 and torch.is_grad_enabled()):
            return [method.encode(extra)[1]]


class ViewFeatureMeanTarget(ViewMeanTarget):
    """η* of eq. (7) in docs/seed.md: t = mean_k z(T_k x), the online encoder's outputs on K =
    `mean_views` further augmentations, averaged in feature space. The neighbour of eq. (10)
    that needs no first-order expansion: it equals f(x̄) only when T(x) − x is small (eq. 8).
    The K views are independent of the two online views, so the target is not a view itself."""

    def combine(self, extra: list[torch.Tensor]) -> torch.Tensor | None:
        return torch.cat(extra)  # (K·N, C, H, W): one batch the loop can lay out like the views

    def make(self, method: "SiameseMethod", views: list[torch.Tensor], zs: list[torch.Tensor],
             extra: torch.Tensor | None, term2: bool) -> list[torch.Tensor]:
        if extra is None:
            raise ValueError("target=view_feature_mean needs its K extra views")
        chunks = list(extra.chunk(self.extra_views(method)))  # each view its own BN batch, as the online ones
        with torch.set_grad_enabled(term2 and torch.is_grad_enabled()):
            return [torch.stack(method.per_view(lambda v: method.encode(v)[1], chunks)).mean(0)]


TARGETS: dict[str, type[Target]] = {"online": Target, "ema": EMATarget, "view_mean": ViewMeanTarget,
                                    "view_feature_mean": ViewFeatureMeanTarget}
