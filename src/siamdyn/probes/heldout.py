"""Collapse read where it can be seen: a fixed held-out batch, every N steps.

The per-step metrics (collapse.py) read the 128-odd images of the training batch. Here the
same ≈ 2 000 test images are embedded at every reading, as one batch with BatchNorm in
training mode (the normalisation the loss sees; BatchNorm's running statistics are
restored afterwards, and at step 0 they would describe nothing yet). The readings are the
ones that work for a projector ending in an affine-free BatchNorm, whose z keeps unit
variance per dimension whatever happens: RankMe of z, p and the backbone features, the
mean |cos| between different images (→ 1 when all outputs lie on one line, whatever
their signs), the norm of the centre vector ‖E[z/‖z‖]‖ (Zhang et al. 2022: a collapsing
output is dominated by its centre), and the per-dimension std of z/‖z‖ and p/‖p‖. No
parameter or buffer changes and no random number is drawn, so the readings never change
the trajectory. Under DDP every rank joins (BatchNorm's statistics are global).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.probes.collapse import effective_rank, normalized_std
from siamdyn.probes.gradients import frozen_buffers


@torch.no_grad()
def representation_stats(x: torch.Tensor, prefix: str) -> dict[str, torch.Tensor]:
    """RankMe (as published, uncentred, and of the centred rows), mean |cos| between different rows,
    centre-vector norm, normalised std and mean row norm of (N, d) `x`. The centred RankMe does not count the shared
    mean direction as a dimension, which matters for heads not ending in BatchNorm (docs/protocol.md)."""
    x = x.float()
    unit = F.normalize(x, dim=1)
    gram = unit @ unit.T
    n = len(x)
    abs_cos = (gram.abs().sum() - gram.diagonal().abs().sum()) / max(1, n * (n - 1))
    return {f"{prefix}_erank": effective_rank(x), f"{prefix}_erank_centred": effective_rank(x, centred=True),
            f"{prefix}_abs_cos": abs_cos,
            f"{prefix}_center_norm": unit.mean(0).norm(), f"{prefix}_std": normalized_std(x)[0],
            # the one scale-bearing reading: an L2 loss through an output BN can shrink z toward 0 unseen
            f"{prefix}_mean_norm": x.norm(dim=1).mean()}


def projector_last_linear(projector: nn.Module) -> nn.Linear | None:
    """The projector's last Linear layer: its input is the projector's hidden layer, read as a
    depth between the backbone and z. None for a projector without one."""
    linears = [m for m in projector.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if len(linears) > 1 else None


class HeldoutProbe:
    """Every `every` steps, the collapse readings of `model` on `images` (uint8, fixed)."""

    def __init__(self, model: nn.Module, images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
                 every: int):
        self.model, self.images, self.prepare, self.every = model, images, prepare, every

    def due(self, step: int) -> bool:
        return bool(self.every) and len(self.images) > 1 and step % self.every == 0

    @torch.no_grad()
    def read(self, step: int) -> dict[str, float]:
        hidden: list[torch.Tensor] = []
        last_linear = projector_last_linear(self.model.projector)
        hook = last_linear.register_forward_hook(lambda m, args, out: hidden.append(args[0])) if last_linear else None
        try:
            with frozen_buffers(self.model):
                f = self.model.backbone(self.prepare(self.images))
                z = self.model.projector(f)
                p = self.model.predictor(z)
        finally:
            if hook is not None:
                hook.remove()
        stats: dict[str, torch.Tensor] = {}
        # Three depths of the encoder (does the backbone follow a collapsing head? docs/open_questions.md), and p.
        depths = [("feature", f)] + [("proj_hidden", hidden[0])] * bool(hidden) + [("z", z), ("p", p)]
        for key, t in depths:
            stats.update(representation_stats(t, f"heldout/{key}"))

        values = torch.stack(list(stats.values())).tolist()  # one host sync
        return {"step": step, **dict(zip(stats, values))}
