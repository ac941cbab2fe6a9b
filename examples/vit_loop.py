"""SimSiam around a from-scratch Vision Transformer with no BatchNorm, with siamdyn's instruments.

    python examples/vit_loop.py                                     # SimSiam, 100 steps
    python examples/vit_loop.py --preset simsiam-no-sg --steps 300

The backbone is a patch embedding (4×4 patches of a 28×28 image: 49 tokens) and two
pre-LayerNorm Transformer blocks, mean-pooled: nothing siamdyn built, nothing that normalises
over the batch, so the collapse readings see the backbone as it is. The loop is
examples/own_loop.py's (public API only: `SiameseMethod`, `CollapseMonitor`, `gradient_split`,
`ModuleSpeeds`); only the backbone and the optimiser (AdamW, as ViTs are trained) differ.
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # own_loop.py beside this file, however it is run
from own_loop import parse_args, train_loop  # noqa: E402


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens (one linear map each, as a strided conv), plus a learnt
    position embedding per patch."""

    def __init__(self, image_size: int, patch: int, in_channels: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(0.02 * torch.randn(1, (image_size // patch) ** 2, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos  # (N, T, dim)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 2):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patch embedding + learnt position embedding, `depth` pre-LN blocks, final LayerNorm, mean
    over the tokens: (N, C, H, W) → (N, dim), the shape `SiameseMethod` expects of a backbone."""

    def __init__(self, image_size: int = 28, patch: int = 4, in_channels: int = 1, dim: int = 64, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        self.feature_dim = dim
        self.patch_embed = PatchEmbed(image_size, patch, in_channels, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens).mean(dim=1)  # pool the tokens: (N, T, D) is not a feature vector

    def groups(self) -> dict[str, nn.Module]:
        """The parts, input to output, for the gradient split and the module speeds."""
        return {"patch_embed": self.patch_embed, **{f"block{i + 1}": b for i, b in enumerate(self.blocks)},
                "norm": self.norm}


def main(argv: list[str] | None = None) -> list[dict]:
    """Train the ViT; the history of `own_loop.train_loop`."""
    args = parse_args(argv, __doc__, lr=1e-3)  # AdamW's scale, not SGD's
    torch.manual_seed(0)
    vit = TinyViT()
    return train_loop(vit, vit.feature_dim, vit.groups(), args,
                      optimizer=lambda ps: torch.optim.AdamW(ps, lr=args.lr, weight_decay=0.05))


if __name__ == "__main__":
    main()
