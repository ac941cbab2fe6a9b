"""Convolution weight gradients, oneDNN vs one im2col matmul (models/conv.py), per backbone shape.

    python bench/conv_weight_grad.py [--width 16] [--batch 256] [--dtype bf16|fp32] [--out FILE]

For each distinct convolution of siamdyn's ResNet-18 on fmnist (28×28), channels_last: the time of
the weight gradient by PyTorch's kernel (`convolution_backward`, weight only) and by
`weight_grad_im2col`, each the median of --reps calls that cycle through 8 different inputs (so
the caches are as cold as in a training step), and each one's error against float64.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import emit, header, median_ms

from siamdyn.models import ResNet18  # noqa: E402
from siamdyn.models.conv import IM2COL, NATIVE, TRIALS, Conv2d, conv_geometry, weight_grad  # noqa: E402

NHWC = torch.channels_last


def conv_shapes(width: int, batch: int) -> list[tuple[Conv2d, tuple[int, ...]]]:
    """Each distinct (layer geometry, input shape) of the backbone, found by a forward pass."""
    model, seen, found = ResNet18(width, 1), set(), []

    def hook(module, inputs, _out):
        key = (tuple(inputs[0].shape), tuple(module.weight.shape), module.stride)
        if key not in seen:
            seen.add(key)
            found.append((module, tuple(inputs[0].shape)))
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, Conv2d)]
    with torch.no_grad():
        model(torch.zeros(batch, 1, 28, 28))
    for h in handles:
        h.remove()
    return found


def row(layer: Conv2d, shape: tuple[int, ...], dtype: torch.dtype, reps: int) -> str:
    w = layer.weight.detach().to(dtype).contiguous(memory_format=NHWC)
    k, s, p = layer.kernel_size, layer.stride, layer.padding
    out = torch.nn.functional.conv2d(torch.zeros(shape, dtype=dtype), w, None, s, p).shape
    pairs = [(torch.randn(shape, dtype=dtype).contiguous(memory_format=NHWC),
              torch.randn(out, dtype=dtype).contiguous(memory_format=NHWC)) for _ in range(8)]
    geometry = conv_geometry(s, p)

    def grad(kernel: str, pair: tuple[torch.Tensor, torch.Tensor], weight: torch.Tensor = w) -> torch.Tensor:
        return weight_grad(kernel, pair[1], pair[0], weight, geometry)
    t_native, t_im2col = (median_ms(lambda pair, k=kernel: grad(k, pair), pairs, reps) for kernel in (NATIVE, IM2COL))
    x, g = pairs[0]
    exact = grad(NATIVE, (x.double(), g.double()), w.double())
    err = [((grad(kernel, pairs[0]).double() - exact).norm() / exact.norm()).item() for kernel in (NATIVE, IM2COL)]
    return (f"| {shape[1]}→{w.shape[0]}, {k[0]}×{k[1]} s{s[0]}, {shape[2]}×{shape[3]} | {t_native:.2f} | "
            f"{t_im2col:.2f} | {t_native / t_im2col:.2f}× | {err[0]:.1e} | {err[1]:.1e} |")


def paired_steps(width: int, batch: int, steps: int) -> list[str]:
    """The whole bf16 training step (simsiam, autocast, channels_last) with measured kernels and with
    oneDNN's only, alternating step by step in one process, so drifting load hits both alike."""
    from siamdyn.config import Config
    from siamdyn.methods import SiameseMethod
    torch.manual_seed(0)
    views = [torch.randn(batch, 1, 28, 28).contiguous(memory_format=NHWC) for _ in range(2)]
    arms = {}
    for name, kernels in (("measured (auto)", "auto"), ("oneDNN only (torch)", "torch")):
        model = SiameseMethod(Config(backbone_width=width, conv_weight_grad=kernels)).to(memory_format=NHWC)
        arms[name] = (model, torch.optim.SGD(model.parameters(), lr=0.01), [])
    warmup = TRIALS + 2  # every shape meets the two kernels TRIALS + 1 times each, at least twice a step
    for i in range(steps + warmup):
        for model, opt, times in arms.values():
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(views).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= warmup:  # the measured arm decides its kernels in its first steps
                times.append(time.perf_counter() - start)
    (a, ta), (b, tb) = ((k, v[2]) for k, v in arms.items())
    ratios = sorted(y / x for x, y in zip(ta, tb))
    q = lambda p: ratios[min(len(ratios) - 1, int(p * len(ratios)))]  # noqa: E731
    return ["", f"Whole bf16 step, {steps} alternating pairs after {warmup} (width {width}, batch {batch}, "
            "two views):", "",
            f"- {a}: median {statistics.median(ta):.3f} s; {b}: median {statistics.median(tb):.3f} s",
            f"- per pair, {b} / {a}: median {statistics.median(ratios):.3f}×, quartiles {q(0.25):.3f}–{q(0.75):.3f}×"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--steps", type=int, default=20, help="alternating whole-step pairs (0: none)")
    ap.add_argument("--out")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    lines = header("Convolution weight gradients: oneDNN vs im2col matmul") + [
        f"- ResNet-18 width {args.width}, batch {args.batch}, 28×28 input, channels_last, {args.dtype}; "
        f"median of {args.reps} calls over 8 rotating inputs; error: relative Frobenius vs float64", "",
        "| conv (in→out, kernel, stride, input) | oneDNN ms | im2col ms | im2col speed-up | oneDNN error | "
        "im2col error |", "|---|---|---|---|---|---|"]
    for layer, shape in conv_shapes(args.width, args.batch):
        lines.append(row(layer, shape, dtype, args.reps))
    if args.steps:
        lines += paired_steps(args.width, args.batch, args.steps)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
