"""SimSiam around a backbone siamdyn did not build, in a plain loop, with siamdyn's instruments.

    python examples/own_loop.py                                     # SimSiam
    python examples/own_loop.py --preset simsiam-no-sg --lr 0.3 --steps 300

Without stop-gradient, RankMe(z) falls (measured: 6.3 vs SimSiam's 41.0 after 300 steps at
lr 0.3) while the std of z stays near 1/√d: SimSiam's projector ends in a BatchNorm, so
its collapse shows in the rank and the cosines, not in the std (docs/design.md §5).

Everything here is public API (docs/api.md): the method wraps any backbone nn.Module, the
collapse monitor reads z and p, and the gradient split and module speeds work over named
groups of the backbone's layers that you choose.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

import torch
import torch.nn as nn

from siamdyn import CollapseMonitor, Config, ModuleSpeeds, SiameseMethod, gradient_split
from siamdyn.data import AugmentParams, BatchAugment, channel_stats, load_split


def small_cnn() -> nn.Sequential:
    """Three conv blocks and a global pool: 64-d features, nothing from siamdyn."""
    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*block(1, 16, 1), *block(16, 32, 2), *block(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def parse_args(argv: list[str] | None, doc: str, **defaults: Any) -> argparse.Namespace:
    """The flags every example takes (this one and vit_loop.py); `defaults` changes their defaults."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--preset", default="simsiam")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--limit", type=int, default=5000, help="Fashion-MNIST training images to draw from")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.set_defaults(**defaults)
    return ap.parse_args(argv)


def train_loop(backbone: nn.Module, feature_dim: int, groups: dict[str, nn.Module], args: argparse.Namespace,
               optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None) -> list[dict]:
    """Train `backbone` as args.preset on Fashion-MNIST for args.steps steps; one dict of numbers
    per step (loss, the monitor's readings, module speeds, the gradient split every 20th step)."""
    torch.manual_seed(0)
    data = load_split("fashion-mnist", args.data_dir, "train").balanced_subset(args.limit)
    augment = BatchAugment(AugmentParams(), *channel_stats(data.images))
    cfg = Config.from_preset(args.preset, {"proj_hidden": 256, "proj_dim": 256, "pred_hidden": 64})
    method = SiameseMethod(cfg, backbone=backbone, feature_dim=feature_dim, groups=groups)
    opt = (optimizer or (lambda ps: torch.optim.SGD(ps, lr=args.lr, momentum=0.9, weight_decay=5e-4)))(
        list(method.parameters()))
    monitor = CollapseMonitor(dim=cfg.proj_dim, patience=10)
    speeds = ModuleSpeeds(method.module_groups())
    first = next(iter(groups))
    g = torch.Generator().manual_seed(0)
    history = []
    for step in range(1, args.steps + 1):
        x = data.images[torch.randint(len(data), (args.batch,), generator=g)]
        views = [augment(x, g), augment(x, g)]
        split = gradient_split(method, views) if step % 20 == 1 else None  # term 1 vs term 2, before the step
        out = method(views)
        opt.zero_grad()
        out.loss.backward()
        speeds.snapshot()
        opt.step()
        method.update_target(tau=0.99)  # the EMA of a BYOL preset; nothing for SimSiam
        row = {"step": step, "loss": out.loss.item(), **monitor.update(step, out.z, out.p, out.features[0]),
               **speeds.measure(), **(split or {})}
        history.append(row)
        if step % 20 == 0 or monitor.fired:
            print(f"step {step:4d}  loss {row['loss']:+.3f}  {monitor.headline()}  "
                  f"speed predictor/{first} {row['speed/predictor'] / max(row[f'speed/{first}'], 1e-12):.1f}x")
    verdict = f"collapsed at step {monitor.collapse_step} ({monitor.reason})" if monitor.collapsed else "no collapse"
    print(f"{args.preset}: {verdict}")
    return history


def main(argv: list[str] | None = None) -> list[dict]:
    """Train the small CNN; the history of `train_loop`."""
    args = parse_args(argv, __doc__)
    cnn = small_cnn()
    return train_loop(cnn, 64, {"block1": cnn[0:3], "block2": cnn[3:6], "block3": cnn[6:9]}, args)


if __name__ == "__main__":
    main()
