"""The design space of DESIGN.md §1 as one module: a method is a config, not a class.

    online views v_i ──backbone──▶ f_i ──projector──▶ z_i ──predictor──▶ p_i
    target t_j: z_j itself (`online`), an EMA copy's output (`ema`), or the online
    encoder applied to x̄, the pixel mean of K views (`view_mean`, eq. 10)
    loss = combine_{(i,j)} D(p_i, t_j)   over the ordered pairs of different views

`grad_terms` decides which of the two gradient terms of SEED_NOTES §3 reach the encoder:
term 1 flows through the predictor branch (p_i depends on z_i), term 2 through the
target branch (t_j depends on z_j). Stop-gradient is `predictor_branch`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.config import Config
from siamdyn.models import ResNet18, byol_mlp, init_weights, linear_predictor, simsiam_predictor, simsiam_projector


# ----------------------------------------------------------------------------- losses
def negative_cosine(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, t) = −⟨p/‖p‖, t/‖t‖⟩, averaged over the batch. Range [−1, 1]."""
    return -F.cosine_similarity(p, t, dim=1).mean()


def normalized_mse(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """BYOL's ‖p/‖p‖ − t/‖t‖‖² = 2 − 2·cos(p, t), averaged over the batch. Range [0, 4]."""
    return (2 - 2 * F.cosine_similarity(p, t, dim=1)).mean()


def info_nce(p: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE (van den Oord 2018; SimCLR with cross-view negatives): cross-entropy of
    cos(p_n, t_m)/T over m, the positive being m = n."""
    logits = F.normalize(p, dim=1) @ F.normalize(t, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(p), device=p.device))


def pair_loss(cfg: Config, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "cosine":
        return negative_cosine(p, t)
    if cfg.loss == "mse":
        return normalized_mse(p, t)
    return info_nce(p, t, cfg.temperature)


def ema_tau(cfg: Config, step: int, total_steps: int) -> float:
    """BYOL's schedule τ_k = 1 − (1 − τ_base)(cos(πk/K) + 1)/2, or τ_base when fixed."""
    if cfg.tau_schedule == "fixed" or total_steps <= 0:
        return cfg.tau
    return 1 - (1 - cfg.tau) * (math.cos(math.pi * step / total_steps) + 1) / 2


# ----------------------------------------------------------------------------- the method
@dataclass
class StepOutput:
    loss: torch.Tensor
    z: list[torch.Tensor]  # online projector outputs, one per view
    p: list[torch.Tensor]  # predictor outputs, one per view
    targets: list[torch.Tensor]  # target outputs
    features: list[torch.Tensor]  # backbone features, one per view


class SiameseMethod(nn.Module):
    """Online encoder (backbone + projector), predictor, and the target of `cfg.target`."""

    def __init__(self, cfg: Config, in_channels: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet18(cfg.backbone_width, in_channels)
        make_head = simsiam_projector if cfg.projector == "simsiam" else byol_mlp
        self.projector = make_head(self.backbone.feature_dim, cfg.proj_hidden, cfg.proj_dim)
        if cfg.predictor == "mlp":
            self.predictor = (simsiam_predictor(cfg.proj_dim, cfg.pred_hidden) if cfg.projector == "simsiam"
                              else byol_mlp(cfg.proj_dim, cfg.pred_hidden, cfg.proj_dim))
        elif cfg.predictor == "linear":
            self.predictor = linear_predictor(cfg.proj_dim)
        else:
            self.predictor = nn.Identity()
        init_weights(self, cfg.init)
        if cfg.target == "ema":
            # Target copies of backbone and projector; never trained by the optimiser.
            self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
            self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)

    # -------------------------------------------------------------- forward pieces
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online encoder: (backbone feature f, projector output z)."""
        f = self.backbone(x)
        return f, self.projector(f)

    @torch.no_grad()
    def encode_target(self, x: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(x))

    def per_view(self, fn: Callable, views: list[torch.Tensor]) -> list:
        """[fn(v) for v in views]. `fuse_views`: one call on the concatenated views, split
        back — fewer, larger kernels, but BatchNorm then normalises with the statistics of all
        views together rather than each view's own batch, as SimSiam and BYOL do."""
        if not (self.cfg.fuse_views and len(views) > 1):
            return [fn(v) for v in views]
        out = fn(torch.cat(views))
        if isinstance(out, tuple):
            return list(zip(*(t.chunk(len(views)) for t in out)))
        return list(out.chunk(len(views)))

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Ordered (online view, target) pairs: both orders of the two views, or each view
        against the single x̄ target of eq. (10)."""
        return [(0, 0), (1, 0)] if self.cfg.target == "view_mean" else [(0, 1), (1, 0)]

    def forward(self, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                grad_terms: str | None = None, target: str | None = None) -> StepOutput:
        """Loss of one batch. `views` are the two online views; `xbar` the pixel-mean view
        for `view_mean`. `grad_terms` and `target` override the config (the instruments
        use them to measure term 2 of an EMA method as if its target were online)."""
        cfg = self.cfg
        grad_terms = grad_terms or cfg.grad_terms
        target = target or cfg.target
        term1 = grad_terms in ("predictor_branch", "both")
        term2 = grad_terms in ("both", "target_branch")
        feats, zs = map(list, zip(*self.per_view(self.encode, views)))
        # Term 1 off: the predictor still learns from its own input, but no gradient
        # passes through it into the encoder.
        ps = [self.predictor(z if term1 else z.detach()) for z in zs]
        if target == "online":
            targets = [z if term2 else z.detach() for z in zs]
        elif target == "ema":
            targets = self.per_view(self.encode_target, views)
        else:
            if xbar is None:
                raise ValueError("target=view_mean needs the x̄ batch")
            with torch.set_grad_enabled(term2 and torch.is_grad_enabled()):
                targets = [self.encode(xbar)[1]]
        losses = [pair_loss(cfg, ps[i], targets[j]) for i, j in self.pairs]
        # SimSiam averages the two symmetric terms, BYOL sums them (its gradients are twice
        # SimSiam's for the same per-pair loss; lightly PR #1286).
        loss = torch.stack(losses).sum() if cfg.symmetrize == "sum" else torch.stack(losses).mean()
        return StepOutput(loss, zs, ps, targets, feats)

    # -------------------------------------------------------------- optimisation
    def param_groups(self) -> list[dict]:
        """Parameter groups in solo-learn style: each says whether it follows the cosine
        schedule (`fixed_lr`) and its lr multiplier. SimSiam keeps the predictor's lr fixed."""
        encoder = list(self.backbone.parameters()) + list(self.projector.parameters())
        groups = [dict(name="encoder", params=encoder, fixed_lr=False, lr_scale=1.0)]
        pred = list(self.predictor.parameters())
        if pred:
            groups.append(dict(name="predictor", params=pred, fixed_lr=self.cfg.predictor_fixed_lr,
                               lr_scale=self.cfg.predictor_lr_scale))
        return groups

    @torch.no_grad()
    def update_target(self, tau: float) -> None:
        """EMA: ξ ← τ·ξ + (1 − τ)·θ; BN running statistics are copied."""
        if self.cfg.target != "ema":
            return
        for online, target in ((self.backbone, self.target_backbone), (self.projector, self.target_projector)):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(tau).add_(po.detach(), alpha=1 - tau)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)

    def module_groups(self) -> dict[str, nn.Module]:
        """The groups whose update speeds the instruments report, input to output."""
        b = self.backbone
        groups = dict(stem=b.stem, stage1=b.stage1, stage2=b.stage2, stage3=b.stage3, stage4=b.stage4,
                      projector=self.projector)
        if list(self.predictor.parameters()):
            groups["predictor"] = self.predictor
        return groups

    @torch.no_grad()
    def nonfinite_gradient(self, loss: torch.Tensor | None = None) -> str | None:
        """None if `loss` and every gradient are finite (one host sync), "loss" if the loss
        is not, else "GROUP (PARAM)" of the non-finite gradient nearest the loss: backward
        runs output → input, so that is where it went bad first."""
        sums = [p.grad.sum() for p in self.parameters() if p.grad is not None]
        sums += [loss.detach().reshape(())] if loss is not None else []
        if not sums or torch.isfinite(torch.stack(sums).sum()):
            return None
        if loss is not None and not torch.isfinite(loss):
            return "loss"
        for group, module in reversed(list(self.module_groups().items())):
            for name, p in reversed(list(module.named_parameters())):
                if p.grad is not None and not torch.isfinite(p.grad).all():
                    return f"{group} ({name})"
        return "an unlisted parameter"
