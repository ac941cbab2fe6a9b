"""BatchNorm2d whose batch statistics are exact in float32 channels_last on the CPU
(opt-in: `exact_batchnorm=true`; the ResNet's default is `nn.BatchNorm2d`, docs/design.md §7).

PyTorch's CPU kernel for a channels_last (NHWC) input with H·W > 1 sums each channel's mean
and variance in float32, row after row, over N·H·W / threads rows; its NCHW kernel does not
(an input with H·W = 1 takes the channels_last code in either layout, over N rows only). At the batch
sizes we train with that costs ~20× the forward rounding error of NCHW and 16× the rounding
error of a whole backbone gradient (docs/design.md §7). Here the statistics come from
blocked sums (exact to float32) in two passes, the normalisation and the backward
from PyTorch's own kernels given those statistics. Every other case (bf16 under autocast,
NCHW, CUDA, eval mode with running statistics) is plain `nn.BatchNorm2d`, so state dicts,
`SyncBatchNorm` conversion and initialisation are unchanged. Two differences: the weight and
bias gradients still come from PyTorch's channels_last sums (docs/design.md §7), and double
backward through the exact path is refused. torch.compile traces it without graph breaks;
its exactness is measured in eager mode.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def uses_exact_statistics(x: torch.Tensor) -> bool:
    """True for the inputs PyTorch's channels_last CPU kernel would sum inexactly."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4 and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last))


def blocked_row_sum(rows: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Column sums of a (rows, C) matrix: each block of `block` rows summed by `torch.sum`, then
    the block sums. The error grows with `block`, not with the row count, and it is 2.6–3.4×
    faster than `rows.sum(0)` for the narrow C of our first stages (docs/design.md §7)."""
    q = rows.shape[0] // block
    total = rows[: q * block].view(q, block, rows.shape[1]).sum(1).sum(0)
    return total if q * block == rows.shape[0] else total + rows[q * block:].sum(0)


def channel_statistics(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of an NHWC tensor, two-pass: the (N·H·W, C) view
    is a view, the sums are blocked (`blocked_row_sum`), and `mse_loss` forms (x − mean)² in
    one pass, so the error does not grow with N·H·W."""
    rows = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    mean = blocked_row_sum(rows) / rows.shape[0]
    var = blocked_row_sum(F.mse_loss(rows, mean.expand_as(rows), reduction="none")) / rows.shape[0]
    return mean, var


class _ExactStatisticsBatchNorm(torch.autograd.Function):
    """Training-mode batch norm from exact statistics; returns (y, mean, biased var)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, var = channel_statistics(x)
        # Eval mode with these statistics as the "running" ones is exactly the normalisation.
        y = F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)
        ctx.save_for_backward(x, weight, mean, torch.rsqrt(var + eps))
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: torch.Tensor, _mean: torch.Tensor, _var: torch.Tensor):
        x, weight, mean, invstd = ctx.saved_tensors
        mask = [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
                ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
            grad_y.contiguous(memory_format=torch.channels_last), x, weight, None, None, mean, invstd,
            True, ctx.eps, mask)
        return grad_x, grad_w, grad_b, None


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` (Ioffe & Szegedy 2015: y = (x − μ_B) / √(σ²_B + ε) · γ + β) with exact
    batch statistics for float32 channels_last input on the CPU; the running statistics are
    updated as `nn.BatchNorm2d` does (momentum, or a cumulative average when it is None;
    unbiased variance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or self.running_mean is None
        if not (batch_stats and uses_exact_statistics(x)):
            return super().forward(x)
        self._check_input_dim(x)
        y, mean, var = _ExactStatisticsBatchNorm.apply(x, self.weight, self.bias, self.eps)
        if self.training and self.track_running_stats:
            self.update_running_statistics(mean, var, x.numel() // x.shape[1])
        return y

    @torch.no_grad()
    def update_running_statistics(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean, factor)
        self.running_var.lerp_(var * (n / max(n - 1, 1)), factor)
