"""Q2, "is f(x) or f(x̄) the better feature?" (docs/open_questions.md), asked fairly.

H7 compared f(x) with f(x̄_8), the pixel mean of 8 random crops: a blurred, off-distribution
image on which every encoder, random init included, loses points. So each trained encoder
(and a random-init one) is read under every test-time input below, and the report compares
each with f(x) seed by seed (kNN and linear probe):

  f(x)                     the image
  f(centre crop)           one deterministic crop of the mean training crop area, resized back
  f(x̄_K), K = 1 … 16       the pixel mean of K augmentations (K = 1: one augmented view)
  mean_k f(T_k x)          the feature mean over K = 8 augmentations (η* of eq. 7)
  f(x + ε(x̄_8 − x))        the test-time ε sweep toward x̄ (ε = 1 is f(x̄_8))
  f(blur x)                a Gaussian blur as sharp as x̄_8 (mean squared neighbour difference):
                           what blur alone costs
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from siamdyn.data import BatchAugment
from siamdyn.data.augment import gaussian_blur, resized_crop
from siamdyn.eval import fused_for_inference

KS = (1, 2, 4, 8, 16)
REFERENCE_K = 8
EPSILONS = (0.25, 0.5)
BLUR = "f(blur x), as sharp as x̄_8"
SIGMAS = tuple(0.25 * 1.25 ** i for i in range(16))  # 0.25 … 7.1 pixels


def pixel_mean(augment: BatchAugment, k: int, g: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ↦ x̄_k, the pixel mean of k augmentations (normalised, as the encoder's input)."""
    return lambda x: torch.stack([augment(x, g) for _ in range(k)]).mean(0)


def centre_crop(augment: BatchAugment, area: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """x ↦ its central square crop of `area` (fraction of the image), resized back."""
    def crop(x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        ch, cw = max(1, round(h * math.sqrt(area))), max(1, round(w * math.sqrt(area)))
        box = torch.tensor([(h - ch) // 2, (w - cw) // 2, ch, cw], device=x.device).expand(n, 4)
        return augment.normalize(resized_crop(x.float(), box, (h, w)).round().clamp(0, 255))
    return crop


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of σ pixels, its kernel ±3σ but inside the image (reflect padding)."""
    side = min(x.shape[-2:])
    kernel = min(2 * math.ceil(3 * sigma) + 1, side - 1 if side % 2 == 0 else side - 2)
    return gaussian_blur(x, torch.full((len(x),), sigma, device=x.device, dtype=x.dtype), max(3, kernel))


def sharpness(x: torch.Tensor) -> float:
    """Mean squared difference of neighbouring pixels (both directions): what averaging and blur remove."""
    return ((x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()).item()


def matched_sigma(augment: BatchAugment, images: torch.Tensor, g: torch.Generator) -> float:
    """The blur σ that leaves x as sharp as x̄_8 is, on a sample of images. Sharpness, not the distance
    to x: that distance also counts colour jitter, which no blur reproduces."""
    x = augment.normalize(images)
    target = math.log(sharpness(pixel_mean(augment, REFERENCE_K, g)(images)))
    return min(SIGMAS, key=lambda s: abs(math.log(sharpness(blur(x, s))) - target))


def conditions(augment: BatchAugment, sigma: float, seed: int, area: float) -> dict[str, tuple[Callable, int]]:
    """name → (x (uint8) ↦ encoder input, K views whose features are averaged (1: none)); `sigma`:
    the matched blur's (matched_sigma)."""
    g = torch.Generator(device=augment.mean.device).manual_seed(seed)  # draws where the images are (a GPU too)
    conds: dict[str, tuple[Callable, int]] = {"f(x)": (augment.normalize, 1),
                                              "f(centre crop)": (centre_crop(augment, area), 1)}
    conds.update({f"f(x̄_{k})": (pixel_mean(augment, k, g), 1) for k in KS})
    conds[f"mean_k f(T_k x), K = {REFERENCE_K}"] = (lambda x: augment(x, g), REFERENCE_K)
    for eps in EPSILONS:
        xbar = pixel_mean(augment, REFERENCE_K, g)
        conds[f"f(x + {eps}(x̄_8 − x))"] = (lambda x, e=eps, m=xbar: (1 - e) * augment.normalize(x) + e * m(x), 1)
    conds[BLUR] = (lambda x: blur(augment.normalize(x), sigma), 1)
    return conds


@torch.no_grad()
def condition_features(backbone: torch.nn.Module, images: torch.Tensor, prepare: Callable, views: int,
                       memory_format: torch.memory_format, batch_size: int = 1024) -> torch.Tensor:
    """Backbone features (BatchNorm folded) of `images` under one condition; `views` > 1 averages
    the features of that many draws of `prepare`."""
    fused = fused_for_inference(backbone)
    device = next(backbone.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(device)
        feats = [fused(prepare(x).contiguous(memory_format=memory_format)).float() for _ in range(views)]
        out.append(torch.stack(feats).mean(0).cpu())
    return torch.cat(out)


def read_encoder(backbone: torch.nn.Module, cfg: Any, augment: BatchAugment, train, test, seed: int,
                 score: Callable[[torch.Tensor, torch.Tensor], dict]) -> tuple[dict[str, dict], float]:
    """Every condition's kNN and linear probe for one encoder (train split as the bank), and the
    matched blur's σ (it depends on the run's augmentation)."""
    area = (cfg.crop_scale_min + cfg.crop_scale_max) / 2
    device = augment.mean.device
    sigma = matched_sigma(augment, test.images[:256].to(device), torch.Generator(device=device).manual_seed(seed))
    result = {}
    for name, (prepare, views) in conditions(augment, sigma, seed, area).items():
        bank = condition_features(backbone, train.images, prepare, views, cfg.memory_format)
        queries = condition_features(backbone, test.images, prepare, views, cfg.memory_format)
        result[name] = score(bank, queries)
    return result, sigma
