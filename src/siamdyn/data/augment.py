"""Batched augmentations in plain torch: one call per batch, on the training device.

Random resized crop follows torchvision's semantics exactly (box sampling with 10
attempts and a central fallback, bilinear resize with half-pixel centres, edge samples
clamped inside the box, as `F.interpolate(crop, align_corners=False)` does); the crop,
the resize and the horizontal flip are one `grid_sample`. Colour ops follow
torchvision's formulas (blend with 0, with the grey mean, with the grey image) in a
fixed order: brightness, contrast, saturation. Every random draw comes from the
`torch.Generator` passed in, so a seed fixes the views.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision


@dataclass
class AugmentParams:
    """The augmentation knobs; the names are `Config`'s, so `from_config` maps them by name."""
    crop_scale_min: float = 0.2
    crop_scale_max: float = 1.0
    crop_ratio_min: float = 3 / 4
    crop_ratio_max: float = 4 / 3
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    grayscale_p: float = 0.2
    blur_p: float = 0.0

    @classmethod
    def from_config(cls, cfg: Any) -> "AugmentParams":
        """The knobs of a `Config` (or any object with fields of these names)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})

    @property
    def crop_scale(self) -> tuple[float, float]:
        """(min, max) fraction of the image's area a crop covers."""
        return (self.crop_scale_min, self.crop_scale_max)

    @property
    def crop_ratio(self) -> tuple[float, float]:
        """(min, max) aspect ratio (width / height) of a crop."""
        return (self.crop_ratio_min, self.crop_ratio_max)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      g: torch.Generator, device="cpu", attempts: int = 10) -> torch.Tensor:
    """torchvision `RandomResizedCrop.get_params` for n images at once → int64 (n, 4) = (top, left, h, w)."""
    area = height * width
    target = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, attempts, generator=g, device=device))
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = torch.exp(log_r[0] + (log_r[1] - log_r[0]) * torch.rand(n, attempts, generator=g, device=device))
    w = torch.round(torch.sqrt(target * aspect)).long()
    h = torch.round(torch.sqrt(target / aspect)).long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ok.long().argmax(dim=1, keepdim=True)  # first valid attempt per image
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    u_top, u_left = torch.rand(2, n, generator=g, device=device)
    top = (u_top * (height - h + 1).clamp(min=1)).long().clamp(max=height - 1)
    left = (u_left * (width - w + 1).clamp(min=1)).long().clamp(max=width - 1)
    # Central fallback when all attempts failed (torchvision clamps the ratio to its range).
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    failed = ~ok.any(dim=1)
    h = torch.where(failed, torch.full_like(h, fh), h)
    w = torch.where(failed, torch.full_like(w, fw), w)
    top = torch.where(failed, torch.full_like(top, (height - fh) // 2), top)
    left = torch.where(failed, torch.full_like(left, (width - fw) // 2), left)
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int],
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop `boxes` (top, left, h, w) out of float images (N, C, H, W) and resize to `size`
    with bilinear interpolation, optionally mirrored; equals per-image
    `F.interpolate(img[..., t:t+h, l:l+w], size, mode="bilinear", align_corners=False)`."""
    n, _, height, width = images.shape
    out_h, out_w = size
    dtype, device = images.dtype, images.device
    top, left, h, w = (boxes[:, k].to(dtype) for k in range(4))
    dst_x = torch.arange(out_w, device=device, dtype=dtype)
    dst_y = torch.arange(out_h, device=device, dtype=dtype)
    if flip is not None:  # mirrored output column c reads source column out_w - 1 - c
        dst_x = torch.where(flip[:, None], (out_w - 1) - dst_x[None], dst_x[None])
    else:
        dst_x = dst_x.expand(n, out_w)
    # Source pixel coordinate of each output pixel centre, clamped inside the box.
    src_x = left[:, None] + ((dst_x + 0.5) * (w / out_w)[:, None] - 0.5).clamp(min=0)
    src_x = torch.minimum(src_x, (left + w - 1)[:, None])
    src_y = top[:, None] + ((dst_y[None] + 0.5) * (h / out_h)[:, None] - 0.5).clamp(min=0)
    src_y = torch.minimum(src_y, (top + h - 1)[:, None])
    grid = torch.stack([(2 * src_x + 1) / width - 1, torch.zeros_like(src_x)], dim=-1)  # (n, out_w, 2)
    grid = grid[:, None, :, :].expand(n, out_h, out_w, 2).clone()
    grid[..., 1] = ((2 * src_y + 1) / height - 1)[:, :, None]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g_, b = GREY_WEIGHTS
    return (r * x[:, 0:1] + g_ * x[:, 1:2] + b * x[:, 2:3])


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend`: factor·x + (1 − factor)·other, clamped to [0, 1]."""
    return (factor[:, None, None, None] * x + (1 - factor[:, None, None, None]) * other).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Per-image gaussian blur with per-image sigma, as one grouped separable convolution."""
    n, c, h, w = x.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (n·c, k)
    flat = F.pad(x.reshape(1, n * c, h, w), (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=n * c)
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=n * c)
    return flat.reshape(n, c, h, w)


class BatchAugment:
    """Turns a uint8 batch (N, C, H, W) into one augmented, normalised float view."""

    def __init__(self, params: AugmentParams, mean: torch.Tensor, std: torch.Tensor):
        self.p = params
        self.mean = mean.reshape(1, -1, 1, 1)
        self.std = std.reshape(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        p, device = self.p, images.device
        n, c, h, w = images.shape
        x = images.float().div_(255)
        boxes = sample_crop_boxes(n, h, w, p.crop_scale, p.crop_ratio, g, device)
        flip = torch.rand(n, generator=g, device=device) < p.flip_p
        x = resized_crop(x, boxes, (h, w), flip)
        # Colour jitter with probability jitter_p: an image that is not jittered gets factor 1.
        jitter = (torch.rand(n, generator=g, device=device) < p.jitter_p).to(x.dtype)
        bright = 1 + jitter * (_uniform(n, -p.brightness, p.brightness, g, device))
        contr = 1 + jitter * (_uniform(n, -p.contrast, p.contrast, g, device))
        x = _blend(x, torch.zeros_like(x[:, :1]), bright)
        x = _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True), contr)
        if c == 3:
            satur = 1 + jitter * (_uniform(n, -p.saturation, p.saturation, g, device))
            x = _blend(x, _grey(x), satur)
            grey = torch.rand(n, generator=g, device=device) < p.grayscale_p
            x = torch.where(grey[:, None, None, None], _grey(x).expand_as(x), x)
        if p.blur_p > 0:
            blur = torch.rand(n, generator=g, device=device) < p.blur_p
            sigma = _uniform(n, 0.1, 2.0, g, device)
            kernel = max(3, int(0.1 * h) // 2 * 2 + 1)
            x = torch.where(blur[:, None, None, None], gaussian_blur(x, sigma, kernel), x)
        return (x - self.mean) / self.std

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """No augmentation: the evaluation input."""
        return (images.float() / 255 - self.mean) / self.std


def channel_stats(images: torch.Tensor, max_images: int = 10000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of a uint8 set, in [0, 1] units (from at most max_images)."""
    x = images[:max_images].float() / 255
    return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp(min=1e-3)
