"""BatchNorm's cost by layout and precision on the CPU, and what torch.compile makes of BN + ReLU.

    python bench/batchnorm_layouts.py [--batch 256] [--compile] [--out FILE]

For each stage shape of the width-16 ResNet-18 on fmnist (C = 16 at 28×28 … 128 at 4×4):
training-mode BatchNorm forward + backward (PyTorch's kernels) in bf16 and fp32, NHWC and NCHW,
median of 15 calls over 8 rotating inputs (caches as cold as in a step). With --compile, also
F.relu(F.batch_norm(...)) forward + backward at the first stage, eager vs torch.compile.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F
from _common import emit, header, median_ms

STAGES = [(16, 28), (32, 14), (64, 7), (128, 4)]
FORMATS = {"NHWC": torch.channels_last, "NCHW": torch.contiguous_format}


def batch_norm_step(channels: int) -> tuple[Callable, torch.Tensor, torch.Tensor]:
    """A forward + backward of training-mode BatchNorm (or of `body`), the gradients returned, not
    accumulated into .grad (which would add a pass over memory to every call)."""
    weight = torch.ones(channels, requires_grad=True)
    bias = torch.zeros(channels, requires_grad=True)

    def step(x: torch.Tensor, body=lambda x: F.batch_norm(x, None, None, weight, bias, True)) -> tuple:
        y = body(x)
        return torch.autograd.grad(y, (x, weight, bias), torch.ones_like(y))
    return step, weight, bias


def inputs(batch: int, channels: int, side: int, dtype: torch.dtype, fmt: torch.memory_format) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, side, side, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            for _ in range(8)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out")
    args = ap.parse_args()
    lines = header("BatchNorm by layout and precision") + [
        f"- training-mode F.batch_norm forward + backward, batch {args.batch}; median ms of 15 calls over 8 inputs",
        "", "| channels, side | bf16 NHWC | bf16 NCHW | fp32 NHWC | fp32 NCHW |", "|---|---|---|---|---|"]
    for channels, side in STAGES:
        step = batch_norm_step(channels)[0]
        cells = [f"{median_ms(step, inputs(args.batch, channels, side, dtype, fmt), 15, 3):.2f}"
                 for dtype in (torch.bfloat16, torch.float32) for fmt in FORMATS.values()]
        lines.append(f"| {channels}, {side}×{side} | " + " | ".join(cells) + " |")
    if args.compile:
        step, weight, bias = batch_norm_step(16)
        xs = inputs(args.batch, 16, 28, torch.bfloat16, torch.channels_last)

        def body(x):
            return F.relu(F.batch_norm(x, None, None, weight, bias, True))
        compiled = torch.compile(body)
        eager_ms = median_ms(lambda x: step(x, body), xs, 15, 3)
        compiled_ms = median_ms(lambda x: step(x, compiled), xs, 15, 3)
        lines += ["", f"- BN + ReLU, 16 channels at 28×28, bf16 NHWC, forward + backward: eager {eager_ms:.2f} ms, "
                      f"torch.compile {compiled_ms:.2f} ms (after its compile)"]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
