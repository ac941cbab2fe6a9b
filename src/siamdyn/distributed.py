"""Multi-process training on PyTorch's own engine: torchrun + DistributedDataParallel.

`torchrun --nproc_per_node=N -m siamdyn train ...` sets RANK / WORLD_SIZE / LOCAL_RANK;
`init_distributed` reads them. One process (no torchrun) is world size 1 and every helper
here is then a no-op, so the training loop reads the same either way.

Conventions (docs/distributed.md): `batch_size` is the *global* batch, each rank trains on
batch_size / world of it; rank 0 alone logs and writes checkpoints.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Dist:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """Each rank's augmentation stream; rank 0 keeps `seed`, so one process is unchanged."""
    return seed + 1_000_003 * rank


# ----------------------------------------------------------------------------- small collectives
def any_rank(ctx: Dist, flag: bool) -> bool:
    """True on every rank if `flag` is True on any (stop requests must be agreed on, or the
    ranks that go on would wait forever in the next collective)."""
    if not ctx.enabled:
        return flag
    # NCCL reduces GPU tensors only (a host read per call under DDP on GPUs: the loop calls it each step)
    device = torch.device("cuda", ctx.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(ctx: Dist, x: torch.Tensor) -> torch.Tensor:
    """The average of a tensor over ranks (a copy); x itself when alone."""
    if not ctx.enabled:
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x / ctx.world


def gather_rows(ctx: Dist, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate, in rank order, row blocks of the given sizes held one per rank."""
    if not ctx.enabled:
        return local
    padded = torch.zeros(max(sizes), *local.shape[1:], dtype=local.dtype, device=local.device)
    padded[: len(local)] = local
    blocks = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(blocks, padded)
    return torch.cat([b[:n] for b, n in zip(blocks, sizes)])


def gather_objects(ctx: Dist, obj: object) -> list:
    if not ctx.enabled:
        return [obj]
    out: list = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def weights_digest(model: nn.Module, buffers: bool = True) -> str:
    """sha256 of every parameter (and buffer), to check that ranks hold the same weights.
    Without synchronised BN the BN running statistics legitimately differ between ranks."""
    h = hashlib.sha256()
    for name, t in list(model.named_parameters()) + (list(model.named_buffers()) if buffers else []):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_batch(ctx: Dist, batch_size: int) -> int:
    """The per-rank batch size; the global one must split evenly."""
    if batch_size % ctx.world:
        raise ConfigError(f"batch_size={batch_size} does not split over {ctx.world} processes; "
                          f"use a multiple of {ctx.world}")
    if batch_size // ctx.world < 2:
        raise ConfigError(f"batch_size={batch_size} over {ctx.world} processes leaves < 2 images per process")
    return batch_size // ctx.world


# ----------------------------------------------------------------------------- synchronised BN
class GlobalBatchNorm(nn.Module):
    """BatchNorm with statistics over the global batch of all ranks (SimSiam's SyncBN).

    torch's nn.SyncBatchNorm runs on GPUs only; this is the same computation on any device:
    mean and variance come from autograd-aware all-reduces (torch.distributed.nn), so the
    backward pass equals that of one BatchNorm over the concatenated batch. Two passes
    (mean, then centred second moment) keep the variance as accurate as local BN's.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.eps, self.momentum, self.affine = bn.eps, bn.momentum, bn.affine
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        dist.all_reduce(count)
        mean = dist_nn.all_reduce(x.sum(dims)) / count
        centred = x - mean.view(shape)
        var = dist_nn.all_reduce(centred.pow(2).sum(dims)) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * count / (count - 1), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm → torch's SyncBatchNorm on CUDA, GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return GlobalBatchNorm(module)
    for name, child in module.named_children():
        setattr(module, name, sync_batchnorm(child, device))
    return module
