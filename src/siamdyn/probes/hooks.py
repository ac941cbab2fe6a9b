"""`HookMonitor`: siamdyn's instruments on a model you train in your own loop, read through forward hooks
on the modules you name, so the loop itself does not change.

    monitor = HookMonitor(model, z="projector", p="predictor", features="backbone", optimizer=opt,
                          logger=print_fn)            # before the loop; the loop stays as it was

Each training forward of `model` (grad enabled, the module in train mode) is a step: the hooks keep the
outputs of the named modules (one per view: a module called on view 1 then view 2 gives [z1, z2]); when
`model`'s forward returns, the monitor reads the collapse metrics of them (`CollapseMonitor`, every `every`
steps) and, on probe steps (every `probe_every`), the gradient split g1/g2 from the kept graph before the
loop's own backward: term 1 is the symmetrised loss with the targets detached, term 2 with the predictor
fed detached z (SimSiam's and BYOL's −cos(p1, z2) − cos(p2, z1) unless `loss_fn` says otherwise; for an EMA
target that is the split as if the target were online, as `gradient_split` measures it). With `optimizer`
given, its step hooks measure the module speeds ‖Δw‖/‖w‖ of the same probe steps. Everything goes to
`logger` (siamdyn.loggers) once per step; nothing changes the weights, the gradients or BatchNorm's statistics.

A loop that does not call `model` as a whole (it calls the backbone and the heads itself) passes
`auto_step=False` and calls `end_forward()` after its forward, before backward; the Lightning callback
(siamdyn.lightning) does so from its hooks.
"""
from __future__ import annotations

from typing import Any, Callable, Union

import torch
import torch.nn as nn

from siamdyn.loggers import as_logger
from siamdyn.methods.losses import negative_cosine
from siamdyn.methods.siamese import check_groups
from siamdyn.probes.collapse import CollapseMonitor
from siamdyn.probes.gradients import ModuleSpeeds, group_params, split_gradient

ModuleRef = Union[str, nn.Module]


def resolve(model: nn.Module, ref: ModuleRef, role: str) -> nn.Module:
    """The submodule `ref` names: an attribute path ("encoder.projector", "" for the model itself) or the
    module itself, which must be part of `model`."""
    if isinstance(ref, nn.Module):
        if not any(m is ref for m in model.modules()):
            raise ValueError(f"{role}: the module given is not part of the model; name one of its submodules")
        return ref
    try:
        return model.get_submodule(ref)
    except AttributeError:
        names = [n for n, _ in model.named_children()]
        raise ValueError(f"{role}={ref!r} names no submodule of {type(model).__name__}: give an attribute path "
                         f"such as {names[0] if names else 'backbone'!r} (its children: {names})") from None


def _first_tensor(output: Any) -> torch.Tensor | None:
    """A module's output, or the first tensor of a tuple it returns (a head that also returns its hidden)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def due(step: int, every: int) -> bool:
    """Steps 1, 1 + every, 1 + 2·every …: the first step is always read (the detector judges the run
    against its own start); 0 turns the reading off."""
    return every > 0 and (step - 1) % every == 0


class HookMonitor:
    """Collapse metrics, gradient split and module speeds of `model`, read by forward hooks on the modules
    named `z` (the projector: its output is z), `p` (the predictor; None for a method without one) and
    `features` (the backbone). `groups` names the backbone's parts for the split and the speeds
    ({name: path}; default one group, "backbone" = `features`); the projector and the predictor are groups
    of their own. `chunks`: a module called once on the views concatenated along the batch (give 2).
    `auto_step=False`: the caller calls `end_forward()` (and, with `speeds=True`, `before_update()` /
    `after_update()` around the optimiser step) itself. `detector` passes on to `CollapseMonitor`
    (patience, rank_drop …). `remove()` takes the hooks off."""

    def __init__(self, model: nn.Module, z: ModuleRef, p: ModuleRef | None = None,
                 features: ModuleRef | None = None, groups: dict[str, ModuleRef] | None = None, every: int = 1,
                 probe_every: int = 50, logger: Any = None, optimizer: torch.optim.Optimizer | None = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = negative_cosine,
                 chunks: int = 1, auto_step: bool = True, speeds: bool | None = None, **detector: Any):
        self.model, self.every, self.probe_every, self.chunks = model, every, probe_every, chunks
        self.loss_fn, self.detector_args = loss_fn, detector
        self.logger = as_logger(logger)
        roles = {"z": z, "p": p, "features": features}
        self.modules = {role: resolve(model, ref, role) for role, ref in roles.items() if ref is not None}
        self._encoder_groups = self._groups(groups)
        speed_groups = dict(self._encoder_groups)
        if "p" in self.modules and list(self.modules["p"].parameters()):
            speed_groups["predictor"] = self.modules["p"]
        self.speeds = ModuleSpeeds(speed_groups)
        self.collapse: CollapseMonitor | None = None  # built at the first z, whose width sets its threshold
        self.step = 0  # training forwards seen (or, under Lightning, the trainer's global step)
        self.last: dict[str, float | None] = {}  # the last record logged
        self._taps: dict[str, list[torch.Tensor]] = {role: [] for role in self.modules}
        self._busy = False  # the monitor's own forward of the predictor is not a step of the model
        self._pending: dict[str, float | None] | None = None  # waits for the optimiser step's speeds
        self._snapshot = False  # the speeds hold the weights of before this step's update
        self._handles = [m.register_forward_hook(self._tap(role)) for role, m in self.modules.items()]
        if auto_step:
            self._handles.append(model.register_forward_hook(self._model_hook))
        # speeds need before_update()/after_update() around the optimiser step: its hooks, or the caller's
        self._measures_speeds = optimizer is not None if speeds is None else speeds
        if optimizer is not None:
            self._handles.append(optimizer.register_step_pre_hook(lambda *_: self.before_update()))
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self.after_update()))

    def _groups(self, groups: dict[str, ModuleRef] | None) -> dict[str, nn.Module]:
        """The encoder's groups (checked as SiameseMethod's are: outside the model an error, part of the
        backbone or projector left out a warning)."""
        found = {name: resolve(self.model, ref, f"groups[{name!r}]") for name, ref in (groups or {}).items()}
        if not found and "features" in self.modules:
            found = {"backbone": self.modules["features"]}
        found["projector"] = self.modules["z"]
        cover = {"backbone": self.modules["features"]} if "features" in self.modules else {}
        check_groups(group_params(found), self.model, "model", {**cover, "projector": self.modules["z"]},
                     stacklevel=3)
        return found

    def _tap(self, role: str) -> Callable:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._busy or not torch.is_grad_enabled() or not module.training:
                return  # an evaluation pass (kNN, validation) or the monitor's own
            t = _first_tensor(output)
            if t is None:
                raise TypeError(f"HookMonitor: {role} module {type(module).__name__} returned "
                                f"{type(output).__name__}, not a tensor; name the module whose output is {role}")
            # the graph is kept only where the split will need it: z and p of a probe step
            keep = role != "features" and due(self.step + 1, self.probe_every)
            self._taps[role].append(t if keep else t.detach())
        return hook

    def _model_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.end_forward()  # and return None: a forward hook's return value would replace the model's output

    def _views(self, role: str, taps: dict[str, list[torch.Tensor]]) -> list[torch.Tensor]:
        got = taps.get(role, [])
        if len(got) == 1 and self.chunks > 1:
            got = list(got[0].chunk(self.chunks))
        for t in got:
            if t.dim() != 2:
                raise ValueError(f"HookMonitor: {role} has shape {tuple(t.shape)}, not (N, d): name a module whose "
                                 f"output is one vector per image (after pooling tokens or feature maps)")
        return got

    def end_forward(self) -> dict[str, float | None] | None:
        """Close the step whose forward just ran: its collapse metrics and (probe steps) gradient split,
        logged now or, with an optimiser attached, together with the speeds after its step. None when no
        training forward reached the named modules since the last call (an evaluation pass)."""
        taps, self._taps = self._taps, {role: [] for role in self.modules}
        if not taps["z"]:
            return None
        self.flush()  # a step whose optimiser step never came (skipped by a GradScaler, say)
        self.step += 1
        zs, ps, fs = (self._views(role, taps) for role in ("z", "p", "features"))
        record: dict[str, float | None] = {}
        if due(self.step, self.probe_every) and len(zs) >= 2 and zs[0].requires_grad:
            record.update(self._split(zs, ps))
        if due(self.step, self.every):
            if self.collapse is None:
                self.collapse = CollapseMonitor(zs[0].shape[1], **self.detector_args)
            record.update(self.collapse.update(self.step, zs, ps or None, fs[0] if fs else None))
            record["collapsed"] = float(self.collapse.collapsed)
        self._pending = record
        if not (self._measures_speeds and due(self.step, self.probe_every)):
            self.flush()
        return record

    def _split(self, zs: list[torch.Tensor], ps: list[torch.Tensor]) -> dict[str, float | None]:
        """g1/g2 on the step's own graph (kept for the loop's backward): two extra backward passes through
        the encoder and one forward of the predictor on detached z (`_predict`)."""
        z1, z2 = zs[0], zs[1]
        predictor = self.modules.get("p")
        q1, q2 = (self._predict(predictor, z1.detach()), self._predict(predictor, z2.detach())) \
            if predictor is not None else (z1.detach(), z2.detach())
        p1, p2 = (ps[0], ps[1]) if predictor is not None and len(ps) >= 2 else (z1, z2)
        term1 = 0.5 * (self.loss_fn(p1, z2.detach()) + self.loss_fn(p2, z1.detach()))
        term2 = 0.5 * (self.loss_fn(q1, z2) + self.loss_fn(q2, z1))
        return split_gradient(term1, term2, self._encoder_groups, retain_graph=True)

    def _predict(self, predictor: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """The predictor on `z` with copies of its buffers: BatchNorm's running statistics must not move, and
        not even be written back (the loop's own graph saved them and checks their version at backward)."""
        state = {**dict(predictor.named_parameters()), **{n: b.clone() for n, b in predictor.named_buffers()}}
        self._busy = True
        try:
            return torch.func.functional_call(predictor, state, (z,))
        finally:
            self._busy = False

    def before_update(self) -> None:
        """Before the optimiser step: the weights the speeds are measured from (probe steps)."""
        if self._pending is not None and due(self.step, self.probe_every):
            self.speeds.snapshot()
            self._snapshot = True

    def after_update(self) -> None:
        """After the optimiser step: the module speeds of a probe step, logged with the step's record."""
        if self._pending is not None and self._snapshot:
            self._pending.update(self.speeds.measure())
        self._snapshot = False
        self.flush()

    def flush(self) -> None:
        """Log the record the current step holds, if any."""
        if self._pending:
            self.logger.log(self._pending, self.step)
            self.last = self._pending
        self._pending = None

    def remove(self) -> None:
        """Take every hook off the model and the optimiser, and log what is pending."""
        self.flush()
        for handle in self._handles:
            handle.remove()
        self._handles = []
