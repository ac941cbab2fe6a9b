"""Backbones, heads and weight initialisation."""
from __future__ import annotations

import torch
import torch.nn as nn

from siamdyn.models.heads import (PREDICTORS, PROJECTORS, byol_mlp, linear_predictor, simsiam_predictor,
                                  simsiam_projector)
from siamdyn.models.batchnorm import BatchNorm2d
from siamdyn.models.conv import Conv2d
from siamdyn.models.resnet import ResNet18

__all__ = ["PREDICTORS", "PROJECTORS", "ResNet18", "byol_mlp", "linear_predictor", "simsiam_predictor",
           "simsiam_projector", "init_weights", "as_torch_layers"]

TORCH_TWINS = {BatchNorm2d: nn.BatchNorm2d, Conv2d: nn.Conv2d}  # same state; only the training path differs


def as_torch_layers(module: nn.Module, twins: dict[type, type] = TORCH_TWINS) -> nn.Module:
    """`module` with siamdyn's BatchNorm2d and Conv2d made PyTorch's in place (same state): for
    tools that match exact module types, such as torch.fx's conv-BN folding. Apply it to a copy
    you evaluate; the training model keeps its exact statistics and measured kernels. `twins`:
    which of ours become which of PyTorch's."""
    for m in module.modules():
        twin = twins.get(type(m))
        if twin is not None:
            m.__class__ = twin
    return module


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-initialise conv and linear weights. `kaiming`: He normal, fan_out (the torchvision
    ResNet default); `orthogonal`; `default`: PyTorch's own; `zero`: all zeros (the seed's
    counter-example in docs/seed.md §5). BatchNorm is always weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "kaiming":
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif scheme == "orthogonal":
                nn.init.orthogonal_(m.weight)  # conv kernels are flattened to (out, in·k·k)
            elif scheme == "zero":
                nn.init.zeros_(m.weight)
            if m.bias is not None and scheme != "default":
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
