"""siamdyn's instruments as a Lightning callback: collapse metrics every `every` steps, the gradient split
g1/g2 and the module speeds every `probe_every`, on a LightningModule you wrote, by naming its modules.

    from siamdyn.lightning import SiamdynCallback
    trainer = lightning.Trainer(callbacks=[SiamdynCallback(z="projector", p="predictor", features="backbone")])

The numbers go to the trainer's own loggers (`trainer.loggers`: CSV, TensorBoard, W&B … as configured), at
the trainer's global step, and to `logger=` (siamdyn.loggers) if given. Needs `pip install 'siamdyn[lightning]'`;
importing `siamdyn` alone never imports Lightning.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
except ImportError as e:  # an optional extra: say which
    raise ImportError(f"siamdyn.lightning needs Lightning ({e}): pip install 'siamdyn[lightning]'") from None

from siamdyn.loggers import as_logger
from siamdyn.methods.losses import negative_cosine
from siamdyn.probes.hooks import HookMonitor, ModuleRef


def _refuse_accumulation(trainer: Trainer) -> None:
    """Several backwards per update: a batch is no longer a step, and the readings would be misdated."""
    if trainer.accumulate_grad_batches != 1:
        raise ValueError(f"SiamdynCallback reads one optimiser step per batch; this Trainer accumulates "
                         f"{trainer.accumulate_grad_batches} batches per step: use accumulate_grad_batches=1 "
                         "(a larger batch_size instead) or HookMonitor in your own loop")


class LightningLoggers:
    """The trainer's loggers as a siamdyn `Logger`. Lightning's loggers take numbers only: a value that is
    not finite (None here) is left out of that step (an empty cell in a CSVLogger's file)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer

    def log(self, metrics: Mapping[str, float | None], step: int) -> None:
        """`log_metrics(numbers, step)` on each of the trainer's loggers."""
        numbers = {k: v for k, v in metrics.items() if v is not None}
        for logger in self.trainer.loggers:
            logger.log_metrics(numbers, step)


class SiamdynCallback(Callback):
    """Attaches a `HookMonitor` to the LightningModule being fit. `z`, `p`, `features`: attribute paths of
    its projector, predictor (None: no predictor) and backbone; `groups`: the backbone's parts by path
    ({name: path}) for the split and the speeds. Collapse metrics every `every` training steps, the split
    (before the step's backward, on its own graph; `loss_fn` as in `HookMonitor`) and the speeds every
    `probe_every`; the first step is always read. `detector` passes on to `CollapseMonitor` (patience …).
    One optimiser step per batch, automatic or manual optimisation (`self.manual_backward`), on one process,
    is what is tested; gradient accumulation is refused."""

    def __init__(self, z: ModuleRef = "projector", p: ModuleRef | None = "predictor",
                 features: ModuleRef | None = "backbone", groups: dict[str, ModuleRef] | None = None,
                 every: int = 1, probe_every: int = 50, logger: Any = None,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = negative_cosine,
                 chunks: int = 1, **detector: Any):
        super().__init__()
        self.args = dict(z=z, p=p, features=features, groups=groups, every=every, probe_every=probe_every,
                         loss_fn=loss_fn, chunks=chunks, **detector)
        self.logger = logger
        self.monitor: HookMonitor | None = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hooks on the named modules; records to the trainer's loggers and `logger`."""
        _refuse_accumulation(trainer)
        sinks = [LightningLoggers(trainer), *as_logger(self.logger).loggers]
        self.monitor = HookMonitor(pl_module, logger=sinks, auto_step=False, speeds=True, **self.args)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A GradientAccumulationScheduler changes accumulate_grad_batches at an epoch's start."""
        _refuse_accumulation(trainer)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        """The step about to run is the trainer's global step + 1 (the hooks keep graphs on probe steps)."""
        if self.monitor is not None:
            self.monitor.step = trainer.global_step

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        """The forward is done and its graph still alive: collapse metrics and the split."""
        if self.monitor is not None:
            self.monitor.end_forward()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        """The gradients are in, the weights not yet moved: the speeds' snapshot (probe steps)."""
        if self.monitor is not None:
            self.monitor.before_update()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """The update is done: the speeds, and the step's record goes to the loggers."""
        if self.monitor is not None:
            self.monitor.after_update()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Hooks off the module (a later fit attaches new ones); `monitor` keeps the detector's verdict
        (`monitor.collapse.collapse_step`, `.warning_step`) and the last record."""
        if self.monitor is not None:
            self.monitor.remove()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """An interrupted fit leaves no hooks behind either."""
        self.on_fit_end(trainer, pl_module)
