"""The checkpoint of a run (`RUN/ckpt/last.pt`), one type for training, resume, probe and export.

A checkpoint holds only tensors and plain Python values, so it loads with
`torch.load(..., weights_only=True)`: no pickled code runs when a file is read. Format 1
(siamdyn 0.1) stored numpy's RNG state as an array; it still loads, with numpy's array
type allowed and nothing else.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from siamdyn.inputs import NotRegularFile, open_input
from siamdyn.models.conv import kernel_choices, restore_kernel_choices
from siamdyn.errors import SiamdynError

CKPT_FILE, CONFIG_FILE = os.path.join("ckpt", "last.pt"), "config.yaml"
FORMAT = 2
_FIX = "start the run again with --overwrite"


def _numpy_state_to_plain(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _numpy_state_from_plain(state: Any) -> tuple:
    if isinstance(state, tuple):  # format 1
        return state
    return (state["name"], state["keys"].cpu().numpy().astype(np.uint32), state["pos"], state["has_gauss"],
            state["cached_gaussian"])


@dataclass
class Checkpoint:
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    step: int
    config: dict[str, Any]
    data_mean: torch.Tensor
    data_std: torch.Tensor
    aug_rng_ranks: list[torch.Tensor]  # one augmentation stream per process
    world_size: int = 1
    rank_digests: list[str] | None = None  # sha256 of each rank's weights (DDP consistency)
    knn: list[dict] = field(default_factory=list)  # kNN readings so far
    probes: dict[str, Any] = field(default_factory=dict)  # the probe session's state (collapse detector)
    elapsed_s: float = 0.0  # wall time of the run's sessions up to this checkpoint
    config_digest: str | None = None  # of `config`: a resume tells an edited config.yaml from the trained one
    kernel_choices: dict[str, str] = field(default_factory=dict)  # measured conv kernels (models/conv.py)
    torch_rng: torch.Tensor | None = None
    python_rng: Any = None
    numpy_rng: Any = None
    format: int = FORMAT

    # ------------------------------------------------------------------ capture / restore
    @classmethod
    def capture(cls, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int, config: dict,
                data_mean: torch.Tensor, data_std: torch.Tensor, aug_rng_ranks: list[torch.Tensor],
                **state: Any) -> "Checkpoint":
        """The state of a run at a step boundary, with this process's global RNG streams."""
        return cls(model=model.state_dict(), optimizer=optimizer.state_dict(), step=step, config=config,
                   data_mean=data_mean, data_std=data_std, aug_rng_ranks=aug_rng_ranks,
                   torch_rng=torch.get_rng_state(), python_rng=random.getstate(),
                   numpy_rng=_numpy_state_to_plain(np.random.get_state()), config_digest=config_digest(config),
                   kernel_choices=kernel_choices(), **state)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, aug_gen: torch.Generator,
                rank: int = 0) -> None:
        """Put weights, optimiser state, every RNG stream and the measured kernels back as they were at `step`."""
        load_weights(model, self.model)
        restore_kernel_choices(self.kernel_choices)
        optimizer.load_state_dict(self.optimizer)
        aug_gen.set_state(self.aug_rng_ranks[rank].cpu())  # RNG states are CPU byte tensors, CUDA's too
        if self.torch_rng is not None:
            torch.set_rng_state(self.torch_rng.cpu())
        if self.python_rng is not None:
            random.setstate(_as_tuple(self.python_rng))
            np.random.set_state(_numpy_state_from_plain(self.numpy_rng))

    # ------------------------------------------------------------------ files
    def save(self, path: str) -> None:
        from siamdyn.runs import atomic_save
        atomic_save(asdict(self), path)

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> "Checkpoint":
        """The checkpoint in `path`, or a one-line error saying why it cannot be used."""
        if not os.path.exists(path):
            raise SiamdynError(f"checkpoint {path} does not exist; train the run first")
        raw = _read(path, device)
        missing = {"model", "optimizer", "step"} - set(raw if isinstance(raw, dict) else ())
        if missing:
            raise SiamdynError(f"checkpoint {path} lacks {sorted(missing)}; "
                               f"it was not written by siamdyn train — {_FIX}")
        if raw.get("format", 1) > FORMAT:
            raise SiamdynError(f"checkpoint {path} has format {raw['format']}, newer than this siamdyn reads "
                               f"({FORMAT}); upgrade siamdyn")
        return cls(**_upgrade(raw))

    @classmethod
    def load_run(cls, run_dir: str, device: torch.device | str = "cpu") -> "Checkpoint":
        """The checkpoint of run directory `run_dir` (a folder without config.yaml is not one)."""
        if not os.path.exists(os.path.join(run_dir, CONFIG_FILE)):
            raise SiamdynError(f"{run_dir} is not a run directory (no {CONFIG_FILE}); pass a folder made by "
                               "'siamdyn train'")
        return cls.load(os.path.join(run_dir, CKPT_FILE), device)


def config_digest(config: dict[str, Any]) -> str:
    """sha256 of a config's values, independent of key order (what a checkpoint was trained with)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state)`, or one line saying how the checkpoint does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln or "Missing" in ln
                      or "Unexpected" in ln), str(e).splitlines()[0])
        raise SiamdynError(f"the checkpoint does not fit this model ({first[:160]}); it was written with another "
                           "config (width, heads, preset) — resume with the run's own config") from None


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _read(path: str, device: torch.device | str) -> Any:
    legacy_numpy = [np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct()]
    try:
        with torch.serialization.safe_globals(legacy_numpy), open_input(path, "rb") as f:
            return torch.load(f, map_location=device, weights_only=True)
    except NotRegularFile:
        raise
    except Exception as e:  # torch.load raises many types on a damaged or foreign file
        raise SiamdynError(f"checkpoint {path} is unreadable ({type(e).__name__}); "
                           f"it cannot be used — {_FIX}") from None


def _reconstruct() -> Any:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 1 → 2: the detector's state moved under `probes`; unknown keys are dropped."""
    raw = dict(raw)
    if "probes" not in raw:
        raw["probes"] = {"collapse_step": raw.get("collapse_step"), "collapse_reason": raw.get("collapse_reason")}
    if "aug_rng_ranks" not in raw:
        raw["aug_rng_ranks"] = [raw["aug_rng"]]
    raw.setdefault("config", {})
    raw.setdefault("data_mean", None)
    raw.setdefault("data_std", None)
    names = set(Checkpoint.__dataclass_fields__)
    return {k: v for k, v in raw.items() if k in names}
