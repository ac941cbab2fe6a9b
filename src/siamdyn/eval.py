"""Evaluation on frozen features: weighted kNN (docs/design.md §5), plain kNN, a linear probe,
and the training run's kNN readings with their time-to-accuracy."""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.models import as_torch_layers


def fused_for_inference(encoder: nn.Module) -> nn.Module:
    """An eval-mode copy of `encoder` with each BatchNorm folded into the convolution before
    it (torch.fx): the same function, one pass over memory fewer per layer. Falls back to a
    plain eval copy when the module cannot be traced. The caller's module is not touched."""
    from torch.fx.experimental.optimization import fuse
    plain = as_torch_layers(copy.deepcopy(encoder).eval())  # fuse() matches nn.Conv2d, nn.BatchNorm2d exactly
    try:
        fused = fuse(plain)
    except Exception:  # noqa: BLE001 — an untraceable encoder is still a valid encoder
        return plain
    fmt = torch.channels_last if any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last)
                                     and not p.is_contiguous() for p in plain.parameters()) else torch.contiguous_format
    return fused.to(memory_format=fmt)  # keep the training memory format (the fused weights are new tensors)


@torch.no_grad()
def extract_features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     prepare: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 1024,
                     device: str | torch.device = "cpu", bf16: bool = False) -> torch.Tensor:
    """Apply `fn` to `prepare(images[i:i+b])` in batches; returns float32 features on CPU.
    `bf16`: the forward under bf16 autocast (a run's own precision); the features, and all
    similarities computed from them, are fp32."""
    out = []
    for i in range(0, len(images), batch_size):
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out.append(fn(prepare(images[i:i + batch_size].to(device))).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def encoder_features(encoder: Callable[[torch.Tensor], torch.Tensor], train_images: torch.Tensor,
                     test_images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor],
                     device: str | torch.device = "cpu", bf16: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(train features, test features) of a frozen encoder, the memory bank and the queries.
    A module is evaluated in eval mode with its BatchNorms folded (bench/results/eval_*.md)."""
    if isinstance(encoder, nn.Module):
        encoder = fused_for_inference(encoder)
    return (extract_features(encoder, train_images, prepare, device=device, bf16=bf16),
            extract_features(encoder, test_images, prepare, device=device, bf16=bf16))


@torch.no_grad()
def weighted_knn(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, k: int = 200, temperature: float = 0.1,
                 num_classes: int | None = None, chunk: int = 1024) -> float:
    """Wu et al. 2018 / InstDisc kNN: cosine similarity on L2-normalised features, the k
    nearest neighbours vote for their class with weight exp(sim / T). Returns accuracy in %."""
    num_classes = num_classes or int(train_labels.max()) + 1
    k = min(k, len(train_feats))
    bank = F.normalize(train_feats, dim=1)
    correct = 0
    for i in range(0, len(test_feats), chunk):
        q = F.normalize(test_feats[i:i + chunk], dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(len(q), num_classes)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += (votes.argmax(1) == test_labels[i:i + chunk]).sum().item()
    return 100.0 * correct / max(1, len(test_feats))


@torch.no_grad()
def euclidean_knn(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                  test_labels: torch.Tensor, k: int = 5, chunk: int = 1024) -> float:
    """Plain majority-vote kNN with euclidean distance (ties go to the lowest class). %."""
    num_classes = int(train_labels.max()) + 1
    k = min(k, len(train_feats))
    sq_bank = (train_feats ** 2).sum(1)
    correct = 0
    for i in range(0, len(test_feats), chunk):
        q = test_feats[i:i + chunk]
        dist = sq_bank[None] - 2 * q @ train_feats.T  # ‖q‖² is constant per row
        idx = dist.topk(k, dim=1, largest=False).indices
        votes = F.one_hot(train_labels[idx], num_classes).sum(1)
        correct += (votes.argmax(1) == test_labels[i:i + chunk]).sum().item()
    return 100.0 * correct / max(1, len(test_feats))


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, epochs: int = 30, lr: float = 0.1, batch_size: int = 512,
                 weight_decay: float = 1e-5, seed: int = 0) -> dict[str, float]:
    """Logistic regression on standardised frozen features (SGD, cosine lr). Returns
    train and test accuracy in %."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_feats.mean(0), train_feats.std(0).clamp(min=1e-6)
    xtr, xte = (train_feats - mean) / std, (test_feats - mean) / std
    num_classes = int(train_labels.max()) + 1
    head = nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps = epochs * max(1, -(-len(xtr) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        order = torch.randperm(len(xtr), generator=g)
        for i in range(0, len(xtr), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(head(xtr[idx]), train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        train_acc = (head(xtr).argmax(1) == train_labels).float().mean().item() * 100
        test_acc = (head(xte).argmax(1) == test_labels).float().mean().item() * 100
    return {"linear_train_acc": train_acc, "linear_test_acc": test_acc}


@torch.no_grad()
def knn_accuracy(model: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], train: Any, test: Any,
                 cfg: Any, device: torch.device, ctx: Any = None) -> float | None:
    """Weighted kNN of `model.backbone`'s features. Under DDP each rank embeds its share of
    the images, the features are gathered and rank 0 votes (other ranks get None)."""
    from siamdyn.distributed import Dist, gather_rows
    ctx = ctx or Dist()
    was_training = model.training
    model.eval()
    shares = [torch.tensor_split(x, ctx.world) for x in (train.images, test.images)]
    bank, queries = encoder_features(model.backbone, shares[0][ctx.rank], shares[1][ctx.rank], prepare, device,
                                     bf16=cfg.precision == "bf16")
    bank, queries = (gather_rows(ctx, f, [len(s) for s in share]) for f, share in zip((bank, queries), shares))
    model.train(was_training)
    if not ctx.is_main:
        return None
    return weighted_knn(bank, train.labels, queries, test.labels, cfg.knn_k, cfg.knn_temperature,
                        num_classes=len(train.classes))


def time_to_accuracy(knn_history: list[dict], levels: list[float]) -> dict[str, Any]:
    """For each kNN level (%), the wall time and step of the first evaluation at or above it (None: never)."""
    out = {}
    for level in levels:
        hit = next((h for h in knn_history if h["knn_acc"] is not None and h["knn_acc"] >= level), None)
        out[f"{level:g}"] = {"time_s": hit["time_s"], "step": hit["step"]} if hit else None
    return out
