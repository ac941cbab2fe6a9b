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
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from siamdyn.config import Config
from siamdyn.errors import ConfigError
from siamdyn.methods.losses import LOSSES
from siamdyn.methods.targets import TARGETS, Target
from siamdyn.models import PREDICTORS, PROJECTORS, ResNet18, init_weights


@dataclass
class StepOutput:
    """What one forward of a `SiameseMethod` gives: the loss to backpropagate and, per view, the
    tensors the instruments read (feed `z`, `p` and `features[0]` to `CollapseMonitor.update`)."""
    loss: torch.Tensor
    z: list[torch.Tensor]  # online projector outputs, one per view
    p: list[torch.Tensor]  # predictor outputs, one per view
    targets: list[torch.Tensor]  # target outputs
    features: list[torch.Tensor]  # backbone features, one per view


def backbone_groups(backbone: nn.Module) -> dict[str, nn.Module]:
    """A backbone's named parts for the instruments: its `stages()` if it has them, else itself."""
    stages = getattr(backbone, "stages", None)
    return dict(stages()) if callable(stages) else {"backbone": backbone}


def check_groups(groups: dict[str, list[torch.Tensor]], owner: nn.Module, owner_name: str,
                 cover: dict[str, nn.Module], stacklevel: int = 2) -> None:
    """The instruments see only the parameters the named `groups` hold. A group holding
    parameters from outside `owner` (another model's layers) is an error; trainable parameters of
    `cover` that no group holds would silently drop out of the gradient split and the module
    speeds, so they are warned about. Parameter identities only: nothing waits for the device.
    `stacklevel` counts as warnings.warn's does, from the caller of this function."""
    owned = {id(p) for p in owner.parameters()}
    for name, params in groups.items():
        if any(id(p) not in owned for p in params):
            raise ConfigError(f"group {name!r} holds parameters that are not part of the {owner_name}: "
                              f"build each group from the {owner_name}'s own submodules")
    held = {id(p) for params in groups.values() for p in params}
    trainable = [(f"{part}.{n}", p) for part, m in cover.items() for n, p in m.named_parameters() if p.requires_grad]
    left = [(n, p) for n, p in trainable if id(p) not in held]
    if left:
        names = ", ".join(n for n, _ in left[:3]) + (", ..." if len(left) > 3 else "")
        warnings.warn(f"groups leave {sum(p.numel() for _, p in left)} of the {sum(p.numel() for _, p in trainable)} "
                      f"trainable parameters of the {' and '.join(cover)} in no group ({names}): the gradient split "
                      f"and module speeds do not see them; add a group that holds them", stacklevel=stacklevel + 1)


def check_views(views: list[torch.Tensor]) -> None:
    """Every target pairs view 0 with view 1: one view used to end in an IndexError deep in the
    target. A lone (N, C, H, W) tensor would be iterated image by image. Lengths only: no sync."""
    if isinstance(views, torch.Tensor) and views.dim() != 5:  # (V, N, C, H, W) is V views
        got = f"one tensor of shape {tuple(views.shape)}"
    elif len(views) < 2:
        got = str(len(views))
    else:
        return
    raise ValueError(f"SiameseMethod needs at least 2 views of each image, as a list [view1, view2] of "
                     f"(N, C, H, W) batches; got {got}")


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
        measured = cfg.conv_weight_grad == "auto" and not cfg.deterministic
        self.backbone = (ResNet18(cfg.backbone_width, in_channels, exact_batchnorm=cfg.exact_batchnorm,
                                  measured_conv=measured) if own_backbone else backbone)
        feature_dim = feature_dim or getattr(self.backbone, "feature_dim", None)
        if not feature_dim:
            raise ConfigError("SiameseMethod needs feature_dim= for a backbone without a feature_dim attribute "
                              "(the size of its output per image)")
        self.feature_dim = feature_dim
        self.projector = PROJECTORS[cfg.projector](feature_dim, cfg)
        self.predictor = PREDICTORS[cfg.predictor](cfg.proj_dim, cfg)
        for part in ([self.backbone] if own_backbone else []) + [self.projector, self.predictor]:
            init_weights(part, cfg.init)
        if groups:  # the instruments see only what the groups hold: parts of this backbone, all of it
            params = {k: list(g.parameters() if isinstance(g, nn.Module) else g) for k, g in groups.items()}
            check_groups(params, self.backbone, "backbone", {"backbone": self.backbone}, stacklevel=2)
        self._backbone_groups = groups
        self.pair_loss = LOSSES[cfg.loss](cfg)
        self.target = TARGETS[cfg.target]()
        self.target.build(self)

    # -------------------------------------------------------------- forward pieces
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Online encoder: (backbone feature f, projector output z)."""
        f = self.backbone(x)
        self.check_features(f)
        return f, self.projector(f)

    def check_features(self, f: torch.Tensor) -> None:
        """A backbone output that is not (N, feature_dim) would fail inside the projector as a
        matmul or BatchNorm shape error: name the shape and the fix. Shapes only: no host sync."""
        if f.dim() == 2 and f.shape[1] == self.feature_dim:
            return
        fix = (f"pass feature_dim={f.shape[1]}" if f.dim() == 2 else
               "pool its output to one vector per image (tokens: f.mean(1) or the class token f[:, 0]; "
               "a feature map: nn.AdaptiveAvgPool2d(1) then nn.Flatten())")
        raise ValueError(f"SiameseMethod needs backbone features of shape (N, feature_dim) = (N, {self.feature_dim}); "
                         f"the backbone returned {tuple(f.shape)}: {fix}")

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
        check_views(views)
        target_kind = self.target if target is None else TARGETS[target]()
        feats, zs = map(list, zip(*self.per_view(self.encode, views)))
        return self.heads(feats, zs, views, xbar, grad_terms or self.cfg.grad_terms, target_kind)

    def heads(self, feats: list[torch.Tensor], zs: list[torch.Tensor], views: list[torch.Tensor],
              xbar: torch.Tensor | None, grad_terms: str, target_kind: Target) -> StepOutput:
        """The forward after the encoder (its features `feats`, projections `zs`): predictor, target and
        loss, with the gradient terms `grad_terms` let through. The gradient split calls it twice on one
        encoder pass."""
        term1 = grad_terms in ("predictor_branch", "both")
        term2 = grad_terms in ("both", "target_branch")
        # Term 1 off: the predictor still learns from its own input, but no gradient
        # passes through it into the encoder.
        ps = [self.predictor(z if term1 else z.detach()) for z in zs]
        targets = target_kind.make(self, views, zs, xbar, term2)
        loss = self.combine_losses([self.wide_pair_loss(ps[i], targets[j]) for i, j in target_kind.pairs])
        return StepOutput(loss, zs, ps, targets, feats)

    def wide_pair_loss(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """D(p, t) and its normalisations in fp32 (or wider) even under bf16 autocast (docs/design.md
        §7): a bf16 cosine is quantised to steps of 2^-8 near ±1, where a healthy run sits."""
        wide = torch.promote_types(p.dtype, torch.float32)  # a float64 model keeps float64
        with torch.autocast(p.device.type, enabled=False):
            return self.pair_loss(p.to(wide), t.to(wide))

    def combine_losses(self, pair_losses: list[torch.Tensor]) -> torch.Tensor:
        """SimSiam averages the two symmetric terms, BYOL sums them (its gradients are twice
        SimSiam's for the same per-pair loss)."""
        losses = torch.stack(pair_losses)
        return losses.sum() if self.cfg.symmetrize == "sum" else losses.mean()

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
