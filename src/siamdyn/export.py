"""`siamdyn export RUN`: the trained backbone as a plain state_dict for downstream use.

The file holds only the backbone's tensors (no "backbone." prefix, no optimiser, no RNG
state), so `torch.load(path, weights_only=True)` reads it and `load_state_dict` takes it.
"""
from __future__ import annotations

import os
from typing import Any

import torch

from siamdyn.checkpoint import Checkpoint
from siamdyn.config import Config
from siamdyn.errors import SiamdynError
from siamdyn.runs import atomic_save

PREFIX = "backbone."


def backbone_state(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The online backbone's weights out of a checkpoint, keys without the prefix, on the CPU."""
    state = {k[len(PREFIX):]: v.detach().cpu().contiguous() for k, v in ckpt.model.items() if k.startswith(PREFIX)}
    if not state:
        raise SiamdynError("the checkpoint holds no backbone weights; it was not written by siamdyn train")
    return state


def export_backbone(run_dir: str, out: str | None = None) -> dict[str, Any]:
    """Write RUN's backbone to `out` (default RUN/backbone.pt); returns what was written and
    the Python that rebuilds the backbone from it."""
    ckpt = Checkpoint.load_run(run_dir)
    if not ckpt.config:
        raise SiamdynError(f"the checkpoint of {run_dir} holds no config; export needs a run of siamdyn >= 0.1")
    cfg = Config.from_dict({k: v for k, v in ckpt.config.items()})
    state = backbone_state(ckpt)
    stem = state.get("stem.0.weight")
    in_channels = int(stem.shape[1]) if stem is not None else 1
    out = out or os.path.join(run_dir, "backbone.pt")
    atomic_save(state, out)
    rebuild = (f"from siamdyn.models import ResNet18; import torch\n"
               f"backbone = ResNet18(width={cfg.backbone_width}, in_channels={in_channels}); "
               f"backbone.load_state_dict(torch.load({out!r}, weights_only=True))")
    return {"run": run_dir, "file": out, "step": ckpt.step, "tensors": len(state),
            "parameters": sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k),
            "feature_dim": 8 * cfg.backbone_width, "rebuild": rebuild}
