"""The design space of docs/design.md §1 as one module: a method is a config, not a class.

    online views v_i ──backbone──▶ f_i ──projector──▶ z_i ──predictor──▶ p_i
    target t_j: z_j itself (`online`), an EMA copy's output (`ema`), or the online
    encoder applied to x̄, the pixel mean of K views (`view_mean`, eq. 10)
    loss = combine_{(i,j)} D(p_i, t_j)   over the target's (view, target) pairs

`grad_terms` decides which of the two gradient terms of docs/seed.md §3 reach the encoder:
term 1 flows through the predictor branch (p_i depends on z_i), term 2 through the
target branch (t_j depends on z_j). Stop-gradient is `predictor_branch`.
The backbone is any `nn.Module` mapping images to (N, feature_dim); siamdyn's ResNet-18
is the default.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from siamdyn.config import Config
from siamdyn.errors import ConfigError
from siamdyn.methods.losses import LOSSES
from siamdyn.methods.targets import TARGETS
from siamdyn.models import PREDICTORS, PROJECTORS, ResNet18, init_weights


@dataclass
class StepOutput:
    loss: torch.Tensor
    z: list[torch.Tensor]  # online projector outputs, one per view
    p: list[torch.Tensor]  # predictor outputs, one per view
    targets: list[torch.Tensor]  # target outputs
    features: list[torch.Tensor]  # backbone features, one per view


def backbone_groups(backbone: nn.Module) -> dict[str, nn.Module]:
    """A backbone's named parts for the instruments: its `stages()` if it has them, else itself."""
    stages = getattr(backbone, "stages", None)
    return dict(stages()) if callable(stages) else {"backbone": backbone}


class SiameseMethod(nn.Module):
    """Online encoder (backbone + projector), predictor, and the target of `cfg.target`.

    `backbone`: any module (N, C, H, W) → (N, feature_dim); default siamdyn's ResNet-18 of
    `cfg.backbone_width` on `in_channels`. A backbone of your own keeps its weights (only the
    heads are initialised with `cfg.init`); give `feature_dim` unless it has a `feature_dim`
    attribute, and `groups` (name → submodule, input to output) to split its gradient by part.
    """

    def __init__(self, cfg: Config, in_channels: int = 1, backbone: nn.Module | None = None,
                 feature_dim: int | None = None, groups: dict[str, nn.Module] | None = None):
        super().__init__()
        self.cfg = cfg
        own_backbone = backbone is None
        self.backbone = (ResNet18(cfg.backbone_width, in_channels, exact_batchnorm=cfg.exact_batchnorm)
                         if own_backbone else backbone)
        feature_dim = feature_dim or getattr(self.backbone, "feature_dim", None)
        if not feature_dim:
            raise ConfigError("SiameseMethod needs feature_dim= for a backbone without a feature_dim attribute "
                              "(the size of its output per image)")
        self.projector = PROJECTORS[cfg.projector](feature_dim, cfg)
        self.predictor = PREDICTORS[cfg.predictor](cfg.proj_dim, cfg)
        for part in ([self.backbone] if own_backbone else []) + [self.projector, self.predictor]:
            init_weights(part, cfg.init)
        self._backbone_groups = groups
        self.pair_loss = LOSSES[cfg.loss](cfg)
        self.target = TARGETS[cfg.target]()
        self.target.build(self)

    # -------------------------------------------------------------- forward pieces
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online encoder: (backbone feature f, projector output z)."""
        f = self.backbone(x)
        return f, self.projector(f)

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

    def forward(self, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                grad_terms: str | None = None, target: str | None = None) -> StepOutput:
        """Loss of one batch. `views` are the two online views; `xbar` the target's extra
        input (x̄ for `view_mean`). `grad_terms` and `target` override the config (the
        instruments use them to measure term 2 of an EMA method as if its target were online)."""
        grad_terms = grad_terms or self.cfg.grad_terms
        target_kind = self.target if target is None else TARGETS[target]()
        term1 = grad_terms in ("predictor_branch", "both")
        term2 = grad_terms in ("both", "target_branch")
        feats, zs = map(list, zip(*self.per_view(self.encode, views)))
        # Term 1 off: the predictor still learns from its own input, but no gradient
        # passes through it into the encoder.
        ps = [self.predictor(z if term1 else z.detach()) for z in zs]
        targets = target_kind.make(self, views, zs, xbar, term2)
        # The loss and its normalisations in fp32 (or wider) even under bf16 autocast (docs/design.md
        # §7): a bf16 cosine is quantised to steps of 2^-8 near ±1, where a healthy run sits.
        wide = torch.promote_types(ps[0].dtype, torch.float32)  # a float64 model keeps float64
        with torch.autocast(ps[0].device.type, enabled=False):
            losses = torch.stack([self.pair_loss(ps[i].to(wide), targets[j].to(wide)) for i, j in target_kind.pairs])
        # SimSiam averages the two symmetric terms, BYOL sums them (its gradients are twice
        # SimSiam's for the same per-pair loss).
        loss = losses.sum() if self.cfg.symmetrize == "sum" else losses.mean()
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
        """EMA of the target's module pairs: ξ ← τ·ξ + (1 − τ)·θ; BN running statistics are copied."""
        for online, target in self.target.ema_pairs(self):
            for po, pt in zip(online.parameters(), target.parameters()):
                pt.mul_(tau).add_(po.detach(), alpha=1 - tau)
            for bo, bt in zip(online.buffers(), target.buffers()):
                bt.copy_(bo)

    def module_groups(self) -> dict[str, nn.Module]:
        """The groups whose gradient split and update speeds the instruments report, input to
        output: the backbone's parts, the projector, and the predictor if it has weights."""
        groups = dict(self._backbone_groups or backbone_groups(self.backbone))
        groups["projector"] = self.projector
        if list(self.predictor.parameters()):
            groups["predictor"] = self.predictor
        return groups

    def encoder_groups(self) -> dict[str, nn.Module]:
        """`module_groups` without the predictor: the parts terms 1 and 2 act on."""
        return {k: v for k, v in self.module_groups().items() if k != "predictor"}

    @torch.no_grad()
    def gradient_finite(self, loss: torch.Tensor) -> torch.Tensor:
        """0-d bool tensor: `loss` and every gradient are finite. Nothing is read on the host (the
        loop reads it with the step's other numbers); the max |g| over all gradients (one
        multi-tensor kernel) carries any NaN or inf and, unlike a sum of squares, cannot overflow."""
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        worst = loss.detach().float().reshape(())
        if grads:
            worst = worst + torch.nn.utils.get_total_norm(grads, norm_type=math.inf, foreach=True).float()
        return torch.isfinite(worst)

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
