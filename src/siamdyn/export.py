"""`siamdyn export RUN`: the trained backbone as a plain state_dict for downstream use, and beside
it a JSON card with what the weights alone do not say: the input normalisation the backbone was
trained on (it lives only in the checkpoint) and the lines that rebuild it.

The weights file holds only the backbone's tensors (no "backbone." prefix, no optimiser, no RNG
state), so `torch.load(path, weights_only=True)` reads it and `load_state_dict` takes it. Both
files go through the one writer (outputs.py): atomic, never over an existing file without
`overwrite`, an OSError as one line.
"""
from __future__ import annotations

import json
import os
from typing import Any

import torch

from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.outputs import atomic_write_text, refuse_existing
from siamdyn.runs import atomic_save, refuse_inside_run

PREFIX = "backbone."


def backbone_state(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The online backbone's weights out of a checkpoint, keys without the prefix, on the CPU."""
    state = {k[len(PREFIX):]: v.detach().cpu().contiguous() for k, v in ckpt.model.items() if k.startswith(PREFIX)}
    if not state:
        raise SiamdynError("the checkpoint holds no backbone weights; it was not written by siamdyn train")
    return state


def card_path(weights: str) -> str:
    """Where the card of `weights` goes: the same name with .json (x.pt → x.json)."""
    stem, ext = os.path.splitext(weights)
    return weights + ".json" if ext == ".json" else stem + ".json"


def _normalisation(ckpt: Checkpoint) -> dict[str, list[float]] | None:
    """Per-channel mean and std in [0, 1] pixel units, as the run fed its images (None: the
    checkpoint predates recording them)."""
    if ckpt.data_mean is None or ckpt.data_std is None:
        return None
    # float() of a float32 is exact, and its repr round-trips: the rebuilt input is bit-identical
    return {"mean": [float(v) for v in ckpt.data_mean.flatten()], "std": [float(v) for v in ckpt.data_std.flatten()]}


def rebuild_lines(weights: str, width: int, in_channels: int, norm: dict[str, list[float]] | None) -> str:
    """The Python that rebuilds the backbone from `weights` and prepares its input."""
    lines = ["from siamdyn.models import ResNet18; import torch",
             f"backbone = ResNet18(width={width}, in_channels={in_channels}); "
             f"backbone.load_state_dict(torch.load({weights!r}, weights_only=True))"]
    if norm is None:
        return "\n".join(lines + ["# the run's checkpoint (siamdyn 0.1) does not record its input normalisation"])
    return "\n".join(lines + [
        f"mean, std = torch.tensor({norm['mean']}).view(1, -1, 1, 1), torch.tensor({norm['std']}).view(1, -1, 1, 1)",
        "# features = backbone.eval()((images.float() / 255 - mean) / std)   # images: uint8 (N, C, H, W)"])


def export_backbone(run_dir: str, out: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write RUN's backbone to `out` (default RUN/backbone.pt) and its card (normalisation, rebuild
    lines) to `card_path(out)`; returns the card. Existing files are refused unless `overwrite`."""
    ckpt = Checkpoint.load_run(run_dir)
    if not ckpt.config:
        raise SiamdynError(f"the checkpoint of {run_dir} holds no config; export needs a run of siamdyn >= 0.1")
    cfg = Config.from_dict(dict(ckpt.config))
    state = backbone_state(ckpt)
    stem = state.get("stem.0.weight")
    in_channels = int(stem.shape[1]) if stem is not None else 1
    out = out or os.path.join(run_dir, "backbone.pt")
    card_file = card_path(out)
    for path in (out, card_file):  # `--out RUN/ckpt/last.pt` would leave the run unable to resume or be probed
        refuse_inside_run(path, example=os.path.join(run_dir, "backbone.pt"))
    refuse_existing([out, card_file], overwrite, example="backbone.pt")
    norm = _normalisation(ckpt)
    card = {"run": run_dir, "file": out, "card": card_file, "step": ckpt.step, "preset": cfg.preset,
            "dataset": cfg.dataset, "architecture": "siamdyn.models.ResNet18", "width": cfg.backbone_width,
            "in_channels": in_channels, "feature_dim": 8 * cfg.backbone_width, "tensors": len(state),
            "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
            "input": {"pixels": "uint8 / 255, then (x - mean) / std per channel",
                      **(norm or {"mean": None, "std": None})},
            "rebuild": rebuild_lines(out, cfg.backbone_width, in_channels, norm)}
    atomic_save(state, out)
    atomic_write_text(card_file, json.dumps(card, indent=2) + "\n")
    return card
