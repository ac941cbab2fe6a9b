"""CIFAR-style ResNet-18 (He et al. 2016, as in the SimSiam CIFAR experiments): a 3×3
stem, no max-pool, four stages of two BasicBlocks, global average pool. Width and input
channels are parameters; fmnist-small uses width 16 and one channel (docs/design.md §5).
With `exact_batchnorm=True` its BatchNorm2d is exact in float32 channels_last on the CPU
(models/batchnorm.py); by default it is `nn.BatchNorm2d`. Its convolutions are `models.conv.Conv2d`:
with `measured_conv=True` their bf16 CPU weight gradients take the faster of two measured kernels."""
from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from siamdyn.models.batchnorm import BatchNorm2d
from siamdyn.models.conv import Conv2d as MeasuredConv2d  # nn.Conv2d with a measured weight gradient


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: type[nn.BatchNorm2d] = nn.BatchNorm2d,
                 measured_conv: bool = True):
        super().__init__()
        conv = partial(MeasuredConv2d, measured=measured_conv)
        self.conv1 = conv(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = norm(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = norm(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(conv(in_ch, out_ch, 1, stride, bias=False), norm(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In-place ReLUs on fresh tensors (BN and the sum own their outputs): one allocation
        # and one pass over memory fewer each; the values are bit-identical.
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class ResNet18(nn.Module):
    """`forward` returns the pooled feature (N, 8·width); `stages()` names its parts
    (`stem`, `stage1`..`stage4`) for the instruments."""

    def __init__(self, width: int = 16, in_channels: int = 1, blocks: tuple[int, ...] = (2, 2, 2, 2),
                 exact_batchnorm: bool = False, measured_conv: bool = True):
        super().__init__()
        conv = partial(MeasuredConv2d, measured=measured_conv)
        norm = BatchNorm2d if exact_batchnorm else nn.BatchNorm2d  # the latter: PyTorch's kernel, also in fp32 NHWC
        self.stem = nn.Sequential(conv(in_channels, width, 3, 1, 1, bias=False), norm(width),
                                  nn.ReLU(inplace=True))
        stages, ch = [], width
        for i, n in enumerate(blocks):
            out = width * 2 ** i
            layers = [BasicBlock(ch, out, 1 if i == 0 else 2, norm, measured_conv)]
            layers += [BasicBlock(out, out, 1, norm, measured_conv) for _ in range(n - 1)]
            stages.append(nn.Sequential(*layers))
            ch = out
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.feature_dim = ch

    def stages(self) -> dict[str, nn.Module]:
        """The groups, input to output, whose gradient split and update speed the instruments report."""
        return dict(stem=self.stem, stage1=self.stage1, stage2=self.stage2, stage3=self.stage3, stage4=self.stage4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
