"""The gradient split of docs/seed.md §3 and module speeds, over named parameter groups.

g1 is the encoder gradient that flows through the predictor branch (term 1), g2 the one
that flows through the target branch (term 2), computed for *any* method whatever its
own `grad_terms`: for a stop-gradient method g2 is the force it removes. For an `ema`
target, g2 is taken as if the target were the online network (τ = 0), the force
stop-gradient removes from SimSiam; an EMA target never receives gradient itself.

Groups are `{name: module or list of parameters}`, input to output: a `SiameseMethod`
gives its backbone's parts (siamdyn's ResNet: stem, stage1..4) and the projector; any
other loop passes its own (`split_gradient`, `ModuleSpeeds`).

Probes never change the trajectory: the extra forward passes update BatchNorm running
statistics, so those buffers are restored afterwards, and no parameter is touched.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator, Union

import torch
import torch.nn as nn

from siamdyn.distributed import Dist, mean_over_ranks
from siamdyn.methods.siamese import SiameseMethod, check_groups, check_views
from siamdyn.methods.parallel_views import ViewThreads, split_on_view_threads
from siamdyn.methods.targets import TARGETS, Target
from siamdyn.probes.collapse import stack_scalars

Group = Union[nn.Module, Iterable[torch.Tensor]]


@contextlib.contextmanager
def frozen_buffers(model: torch.nn.Module) -> Iterator[None]:
    """Restore every buffer (BN running mean/var, counters) on exit."""
    saved = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(saved[name])


def group_params(groups: dict[str, Group]) -> dict[str, list[torch.Tensor]]:
    """The trainable parameters of each named group."""
    out = {}
    for name, g in groups.items():
        params = g.parameters() if isinstance(g, nn.Module) else g
        out[name] = [p for p in params if p.requires_grad]
    return out


def _flat(grads: Iterable[torch.Tensor | None], params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def split_tensors(g1: torch.Tensor, g2: torch.Tensor, sizes: dict[str, int]) -> dict[str, torch.Tensor]:
    """‖g1‖, ‖g2‖, ‖g2‖/‖g1‖ and cos(g1, g2) in total and per group, as 0-d tensors on the
    gradients' device (nothing is read: the training loop reads them later, in one batch)."""
    record = {}
    chunks = zip(("total",) + tuple(sizes), (g1,) + g1.split(list(sizes.values())),
                 (g2,) + g2.split(list(sizes.values())))
    for name, c1, c2 in chunks:
        n1, n2 = c1.float().norm(), c2.float().norm()
        suffix = "" if name == "total" else f"/{name}"
        record[f"g1_norm{suffix}"] = n1
        record[f"g2_norm{suffix}"] = n2
        # a group without gradient through the predictor (‖g1‖ = 0) has no ratio: NaN here, None once read
        record[f"g2_over_g1{suffix}"] = torch.where(n1 > 0, n2 / n1.clamp(min=1e-30), torch.full_like(n1, math.nan))
        cos = (c1.float() * c2.float()).sum() / (n1 * n2).clamp(min=1e-30)
        record[f"cos_g1_g2{suffix}"] = torch.where((n1 > 0) & (n2 > 0), cos, torch.zeros_like(cos))
    return record


def read_values(tensors: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """0-d tensors → floats, in one host read. A value that is not finite (an undefined ratio, a
    diverged gradient) reads as None: the records go to JSON, which has null but no inf or NaN."""
    values = stack_scalars(tensors).tolist() if tensors else []
    return {k: v if math.isfinite(v) else None for k, v in zip(tensors, values)}


def split_record(g1: torch.Tensor, g2: torch.Tensor, sizes: dict[str, int]) -> dict[str, float | None]:
    """`split_tensors` read as floats."""
    return read_values(split_tensors(g1, g2, sizes))


def split_gradient(term1_loss: torch.Tensor, term2_loss: torch.Tensor,
                   groups: dict[str, Group], retain_graph: bool = False) -> dict[str, float | None]:
    """The gradient split for any training loop: `term1_loss` is the loss with the target
    detached (gradient through the predictor only), `term2_loss` the loss with the predictor's
    input detached (gradient through the target only), e.g. for SimSiam
    `D(h(z1), z2.detach())` and `D(h(z1.detach()), z2)`. Leaves `.grad` untouched.
    `retain_graph`: keep the forward graph for the loop's own backward (HookMonitor)."""
    params = group_params(groups)
    flat = [p for ps in params.values() for p in ps]
    sizes = {name: sum(p.numel() for p in ps) for name, ps in params.items()}
    g1 = _flat(torch.autograd.grad(term1_loss, flat, retain_graph=True, allow_unused=True), flat)
    g2 = _flat(torch.autograd.grad(term2_loss, flat, retain_graph=retain_graph, allow_unused=True), flat)
    return split_record(g1, g2, sizes)


def gradient_split(model: nn.Module, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                   ctx: Dist = Dist(), groups: dict[str, Group] | None = None) -> dict[str, float | None]:
    """The split for a `SiameseMethod` (any backbone) on one batch, and ‖∂l/∂p‖. Under DDP each
    rank's local-batch gradients are averaged, which gives the gradients of the global-batch
    loss (the mean of the ranks' losses), as in training."""
    return read_values(gradient_split_tensors(model, views, xbar, ctx, groups))


def gradient_split_tensors(model: nn.Module, views: list[torch.Tensor], xbar: torch.Tensor | None = None,
                           ctx: Dist = Dist(), groups: dict[str, Group] | None = None,
                           pool: ViewThreads | None = None) -> dict[str, torch.Tensor]:
    """`gradient_split` as 0-d tensors on the device: one extra encoder pass over the views (the heads
    and an x̄ target run per term), two backward passes, and no host read (the training loop's probes
    read them with the step's other numbers). `pool`: the training step's view threads, which take a
    view each where the target is the online network's own output (methods/parallel_views.py)."""
    if not isinstance(model, SiameseMethod):  # it runs the method's own two gradient terms
        raise TypeError(f"gradient_split needs a SiameseMethod (unwrapped from DDP or torch.compile), got "
                        f"{type(model).__name__}; for a model of your own, call split_gradient(term1_loss, "
                        f"term2_loss, groups) with your two losses")
    params = group_params(groups or model.encoder_groups())
    if groups is not None:  # the method's own groups were checked when it was built
        check_groups(params, model, "model", {"backbone": model.backbone, "projector": model.projector},
                     stacklevel=3)
    flat_params = [p for ps in params.values() for p in ps]
    sizes = {name: sum(p.numel() for p in ps) for name, ps in params.items()}
    target = TARGETS["online"]() if model.cfg.target == "ema" else model.target
    with frozen_buffers(model):
        check_views(views)
        # each term reaches one view's branch only: the online target, the method's own groups, views apart
        if pool is not None and type(target) is Target and groups is None and not model.cfg.fuse_views:
            g1, g2, dl_dp = split_on_view_threads(model, views, flat_params, pool, target.pairs)
        else:
            g1, g2, dl_dp = split_terms(model, views, xbar, target, flat_params)
    split = {"g1": mean_over_ranks(ctx, _flat(g1, flat_params)), "g2": mean_over_ranks(ctx, _flat(g2, flat_params))}
    # ∂l/∂p: the seed's ∂L/∂h factor that both dφ/dt and term 1 carry. Globally
    # ∂L/∂p = ∂l_r/∂p / world on rank r's rows, so ‖∂L/∂p‖² = mean_r ‖∂l_r/∂p‖² / world.
    dl_dp_sq = mean_over_ranks(ctx, torch.stack(dl_dp).sum()) / ctx.world if dl_dp else None
    record = {"dl_dp_norm": dl_dp_sq.sqrt()} if dl_dp_sq is not None else {}
    return {**record, **split_tensors(split["g1"], split["g2"], sizes)}


def split_terms(model: SiameseMethod, views: list[torch.Tensor], xbar: torch.Tensor | None, target: Target,
                params: list[torch.Tensor]) -> tuple[list, list, list[torch.Tensor]]:
    """g1 and g2 per parameter (None: no gradient) and ‖∂l/∂p_i‖² per view, from one encoder pass for
    both terms: in training mode BatchNorm normalises with the batch's own statistics, so a second
    pass would give the same values (and cost a third of a step)."""
    feats, zs = map(list, zip(*model.per_view(model.encode, views)))
    out1 = model.heads(feats, zs, views, xbar, "predictor_branch", target)
    out2 = model.heads(feats, zs, views, xbar, "target_branch", target)
    with torch.autocast(zs[0].device.type, enabled=False):  # the backward runs as the training step's does
        g1 = torch.autograd.grad(out1.loss, params + out1.p, allow_unused=True, retain_graph=True)
        g2 = torch.autograd.grad(out2.loss, params, allow_unused=True)
    dl_dp = [g.float().pow(2).sum() for g in g1[len(params):] if g is not None]
    return list(g1[:len(params)]), list(g2), dl_dp


class ModuleSpeeds:
    """Relative update size ‖Δw‖/‖w‖ of each named group: `snapshot()` before the optimiser
    step, `measure()` after (docs/seed.md §3 (b): the predictor should move fastest)."""

    def __init__(self, groups: dict[str, Group]):
        self.params = group_params(groups)
        self._before: dict[str, torch.Tensor] = {}

    def _flat(self) -> dict[str, torch.Tensor]:
        return {name: torch.cat([p.detach().flatten() for p in ps]).clone() for name, ps in self.params.items() if ps}

    def snapshot(self) -> None:
        """Remember the groups' weights; call it right before `optimizer.step()`."""
        self._before = self._flat()

    def measure(self) -> dict[str, float | None]:
        """{"speed/GROUP": ‖Δw‖/‖w‖} since `snapshot()`, as floats (None where not finite)."""
        return read_values(self.measure_tensors())

    def measure_tensors(self) -> dict[str, torch.Tensor]:
        """`measure` as 0-d tensors on the device (no host read)."""
        if not self._before:
            raise RuntimeError("ModuleSpeeds.measure() before snapshot(): call snapshot() before the optimiser "
                               "step and measure() after it")
        now = self._flat()
        return {f"speed/{name}": (now[name] - w).norm() / w.norm().clamp(min=1e-12) for name, w in self._before.items()}


def snapshot(model: nn.Module) -> ModuleSpeeds:
    """Start measuring the next update of a `SiameseMethod`'s module groups."""
    speeds = ModuleSpeeds(model.module_groups())
    speeds.snapshot()
    return speeds


def module_speeds(model: nn.Module, before: ModuleSpeeds) -> dict[str, float]:
    """‖Δw‖/‖w‖ per module group since `snapshot(model)` gave `before`."""
    return before.measure()
