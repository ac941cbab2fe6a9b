"""One flat config for a run: plain values, a preset name and `key=value` overrides.

A method is a point in the design space of DESIGN.md §1, so a preset is nothing but a
dict of overrides on the defaults below (fmnist-small, DESIGN.md §5). Every value is
validated in one place, `Config.validate`, with a one-line error that names the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, fields
from typing import Any

import yaml

from siamdyn.errors import ConfigError

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Raw-pixel kNN on the full splits (weighted k=200 T=0.1, plain euclidean 5-NN), measured by
# `siamdyn baseline` (bench/results/baseline_fmnist.json): the default time-to-accuracy targets.
RAW_PIXEL_KNN = {"fashion-mnist": (78.85, 85.54)}

# The knobs of the design space and their allowed values (DESIGN.md §1).
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("fashion-mnist", "cifar10", "imagefolder", "synthetic", "synthetic-rgb"),
    "predictor": ("mlp", "linear", "none"),
    "target": ("online", "ema", "view_mean"),
    "grad_terms": ("predictor_branch", "both", "target_branch"),
    "loss": ("cosine", "mse", "infonce"),
    "symmetrize": ("mean", "sum"),
    "tau_schedule": ("fixed", "cosine"),
    "projector": ("simsiam", "byol"),
    "init": ("kaiming", "orthogonal", "default", "zero"),
    "device": ("auto", "cpu", "cuda"),
    "channels_last": ("auto", "on", "off"),
    "precision": ("fp32", "bf16"),
    "optimizer": ("sgd", "lars", "adamw"),
}


@dataclass
class Config:
    # --- data
    dataset: str = "fashion-mnist"
    data_dir: str = ""  # "" = $SIAMDYN_DATA or the Debian package's folder
    limit: int = 0  # class-balanced subset of the train split; 0 = all (synthetic: that many images, ≥ 600)
    test_limit: int = 0  # class-balanced subset of the test split; 0 = all
    image_size: int = 0  # imagefolder: resize to this side, 0 = keep; synthetic: side (0 = 28)
    # --- augmentation (DESIGN.md §5); RGB-only ops are skipped on 1 channel
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
    # --- model
    backbone_width: int = 16
    init: str = "kaiming"
    projector: str = "simsiam"
    proj_hidden: int = 512
    proj_dim: int = 512
    pred_hidden: int = 128
    # --- method: one point of the design space
    preset: str = "simsiam"
    predictor: str = "mlp"
    predictor_lr_scale: float = 1.0
    predictor_fixed_lr: bool = True  # SimSiam: predictor lr is not decayed
    target: str = "online"
    tau: float = 0.99  # EMA base; target ← tau·target + (1 − tau)·online
    tau_schedule: str = "cosine"  # BYOL: tau → 1 with a cosine over training
    mean_views: int = 4  # K, the augmentations averaged in pixel space for eq. (10)
    grad_terms: str = "predictor_branch"
    loss: str = "cosine"
    symmetrize: str = "mean"
    temperature: float = 0.2  # infonce only
    # --- optimisation
    epochs: int = 5
    max_steps: int = 0  # 0 = epochs × steps per epoch; >0 stops early (same schedule)
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (SimSiam), lars (BYOL; SGD with a per-layer trust ratio), adamw
    lr: float = 0.06  # per 256 images: lr_used = lr · batch_size / 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    # --- run
    seed: int = 0
    device: str = "auto"
    threads: int = 0  # 0 = all cores
    deterministic: bool = False
    sync_bn: bool = True  # under torchrun: BatchNorm statistics over the global batch (SimSiam paper)
    # NHWC convolutions: ≈1.5× faster steps at width 16 on this CPU. `auto` turns them on
    # only for backbone_width >= 16: with torch 2.13's oneDNN, the channels-last backward of
    # the 1×1 shortcut conv hung (spinning in jit_avx2_1x1_convolution_bwd_weights) at width 4.
    channels_last: str = "auto"
    # bf16 autocast of forward/backward. Measured 5-8x *slower* on this AVX2-only CPU
    # (bench/results/); worth it on GPUs and CPUs with AVX-512 BF16 / AMX.
    precision: str = "fp32"
    # torch.compile the training step's forward (the backward follows). Off by default: on
    # this CPU the convolutions already run in oneDNN and compiling costs a minute up front
    # (bench/results/); try it on GPUs.
    compile: bool = False
    # Encode both views in one pass of 2×batch: BatchNorm statistics are then pooled over the
    # views (SimSiam/BYOL normalise each view's batch on its own). Off: faithful by default.
    fuse_views: bool = False
    log_every: int = 1  # steps between metric lines (collapse std, RankMe, loss)
    knn_every: int = 1  # epochs between kNN evaluations; 0 = only at the end
    knn_k: int = 200
    knn_temperature: float = 0.1
    # Time-to-accuracy: kNN levels (%) whose first crossing time the summary reports. "" =
    # the dataset's raw-pixel kNN (fashion-mnist: weighted k=200 78.85, plain 5-NN 85.54,
    # measured by `siamdyn baseline`, bench/results/baseline_fmnist.json); "none" = off.
    knn_targets: str = ""
    ckpt_every: int = 0  # steps between mid-epoch checkpoints; 0 = epoch ends only
    probe_every: int = 50  # steps between gradient-split / module-speed probes; 0 = off
    collapse_rank_floor: float = 2.0  # detector: RankMe(z) below this counts as collapse; 0 = std only
    collapse_patience: int = 50  # detector: steps the condition must hold (BYOL dips briefly early on)
    stop_on_collapse: bool = False  # end the run (checkpoint + kNN) when the detector fires

    # ------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, preset: str = "simsiam", overrides: dict[str, Any] | None = None) -> "Config":
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{_did_you_mean(preset, PRESETS)}; "
                              f"choose one of: {', '.join(PRESETS)}")
        cfg = cls(preset=preset, **PRESETS[preset])
        if overrides:
            cfg = cfg.replace(**overrides)
        return cfg.validate()

    def replace(self, **changes: Any) -> "Config":
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise ConfigError(f"unknown config key {key!r}{_did_you_mean(key, names)}; "
                                  "see `siamdyn train --help-config` for the list")
        return dataclasses.replace(self, **{k: _coerce(self, k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        base = cls()
        return base.replace(**d).validate()

    @classmethod
    def from_yaml(cls, path: str) -> "Config":
        try:
            with open(path) as f:
                d = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}; check the path") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        d = d.get("config", d)  # a run's config.yaml nests the values under `config:`
        preset = d.pop("preset", "simsiam")
        return cls.from_preset(preset, d)

    # ------------------------------------------------------------------ derived
    def resolved_data_dir(self) -> str:
        if self.data_dir:
            return self.data_dir
        if self.dataset == "fashion-mnist":
            return os.environ.get("SIAMDYN_DATA", DEFAULT_DATA_DIR)
        return os.environ.get("SIAMDYN_DATA", "")

    @property
    def memory_format(self):
        import torch
        on = self.channels_last == "on" or (self.channels_last == "auto" and self.backbone_width >= 16)
        return torch.channels_last if on else torch.contiguous_format

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / 256

    @property
    def knn_target_levels(self) -> list[float]:
        if self.knn_targets == "none":
            return []
        if not self.knn_targets:
            return list(RAW_PIXEL_KNN.get(self.dataset, ()))
        return [float(x) for x in self.knn_targets.split(",")]

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Config":
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is not valid{_did_you_mean(value, allowed)}; "
                                  f"choose one of: {', '.join(allowed)}")
        for f in fields(self):
            value = getattr(self, f.name)
            _check(not isinstance(value, float) or math.isfinite(value), f"{f.name}={value} must be a finite number")
        _check(self.lr > 0, "lr must be > 0")
        _check(0 <= self.tau < 1, "tau must be in [0, 1) (tau=0 is SimSiam's online target)")
        _check(self.mean_views >= 1, "mean_views (K) must be >= 1")
        _check(self.epochs >= 0, "epochs must be >= 0")
        _check(self.max_steps >= 0, "max_steps must be >= 0")
        _check(self.batch_size >= 2, "batch_size must be >= 2 (BatchNorm needs two samples)")
        _check(self.limit >= 0 and self.test_limit >= 0, "limit and test_limit must be >= 0")
        _check(self.backbone_width >= 1, "backbone_width must be >= 1")
        _check(min(self.proj_hidden, self.proj_dim, self.pred_hidden) >= 1, "head dims must be >= 1")
        _check(0 < self.crop_scale_min <= self.crop_scale_max <= 1, "need 0 < crop_scale_min <= crop_scale_max <= 1")
        _check(0 < self.crop_ratio_min <= self.crop_ratio_max, "need 0 < crop_ratio_min <= crop_ratio_max")
        for p in ("flip_p", "jitter_p", "grayscale_p", "blur_p"):
            _check(0 <= getattr(self, p) <= 1, f"{p} must be a probability in [0, 1]")
        for j in ("brightness", "contrast", "saturation"):
            _check(0 <= getattr(self, j) < 1, f"{j} must be in [0, 1)")
        _check(self.predictor_lr_scale >= 0, "predictor_lr_scale must be >= 0")
        _check(self.momentum >= 0 and self.weight_decay >= 0, "momentum and weight_decay must be >= 0")
        _check(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        _check(self.temperature > 0 and self.knn_temperature > 0, "temperatures must be > 0")
        _check(self.knn_k >= 1, "knn_k must be >= 1")
        _check(self.log_every >= 1, "log_every must be >= 1")
        try:
            levels = self.knn_target_levels
        except ValueError:
            raise ConfigError(f"knn_targets={self.knn_targets!r} must be comma-separated percentages, '' or 'none'") from None
        _check(all(0 < x <= 100 for x in levels), "knn_targets must lie in (0, 100]")
        _check(self.collapse_patience >= 1, "collapse_patience must be >= 1")
        _check(self.collapse_rank_floor >= 0, "collapse_rank_floor must be >= 0 (0 turns the rank test off)")
        _check(min(self.knn_every, self.ckpt_every, self.threads, self.image_size, self.probe_every) >= 0,
               "knn_every, ckpt_every, probe_every, threads and image_size must be >= 0")
        if self.target == "ema" and self.grad_terms != "predictor_branch":
            raise ConfigError("target=ema receives no gradient, so grad_terms must be predictor_branch; "
                              "use target=online to study term 2")
        if self.loss == "infonce" and self.target == "view_mean":
            raise ConfigError("loss=infonce needs two views per image; use target=online or ema")
        return self


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _did_you_mean(word: Any, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(cfg: Config, key: str, value: Any) -> Any:
    """Turn a `--set key=value` string (or a YAML value) into the field's type."""
    current = getattr(cfg, key)
    kind = type(current)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} must be of type {kind.__name__}") from None


def parse_overrides(items: list[str]) -> dict[str, str]:
    """`["lr=0.1", "tau=0.9"]` → `{"lr": "0.1", "tau": "0.9"}`."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# Presets are named points of the design space (DESIGN.md §1): overrides on the defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Chen & He 2021: predictor, stop-gradient, negative cosine, ½(D(p1,z2) + D(p2,z1)).
    "simsiam": {},
    # Grill et al. 2020: EMA target (τ 0.99 → 1), 2 − 2cos summed over both orders, the
    # predictor's lr decays with the rest.
    "byol": dict(target="ema", tau=0.99, tau_schedule="cosine", loss="mse", symmetrize="sum",
                 projector="byol", proj_hidden=512, proj_dim=128, pred_hidden=512,
                 predictor_fixed_lr=False),
    # SimSiam without stop-gradient: terms 1 + 2 of SEED_NOTES §3 reach the encoder.
    "simsiam-no-sg": dict(grad_terms="both"),
    # SimSiam without predictor (h = identity), stop-gradient kept.
    "simsiam-no-pred": dict(predictor="none"),
    # Plain Siamese: no predictor and no stop-gradient, eq. (9).
    "siamese": dict(predictor="none", grad_terms="both"),
    # Eq. (10): target f(x̄), x̄ = pixel mean of K augmentations; no predictor, no stop-gradient.
    "xbar": dict(predictor="none", target="view_mean", grad_terms="both"),
    # SimCLR, the contrastive reference: InfoNCE with cross-view negatives.
    "simclr": dict(predictor="none", grad_terms="both", loss="infonce", symmetrize="mean",
                   projector="byol", proj_dim=128),
}


# The fmnist-small training recipe of `siamdyn train`, per preset (issue 7; the evidence is
# in docs/recipe.md, bench/results/recipe_prune.md): applied over the preset when the data
# is Fashion-MNIST, under the user's own --set values; `--paper-recipe` turns it off.
# `Config.from_preset` itself keeps the papers' recipe (DESIGN.md §5), which the experiment
# grids, the demo and the tests build on.
FMNIST_RECIPE: dict[str, dict[str, Any]] = {
    # AdamW beat SGD at any lr we tried (66.3 vs 60.1 % kNN in the pruning runs); a 0.2-epoch
    # lr warm-up on top: 70.3 ± 1.2 vs 65.8 ± 1.7 % over 3 seeds (without it z's RankMe falls
    # to ≈ 13-16 within 25 steps and ends ≈ 10; with it, 27-41 and ≈ 20; docs/recipe.md).
    "simsiam": dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=0.2),
    # AdamW with milder crops: 65.7 vs 63.6 % (the paper recipe's p std also dips for > 50 steps);
    # a 10× predictor lr on top: 68.6 ± 1.0 vs 66.3 ± 1.1 % over 3 seeds, ahead on each (z's
    # RankMe ends at 21-26 instead of 9-11; SEED_NOTES §3 (c): a faster predictor should not hurt).
    "byol": dict(optimizer="adamw", lr=2e-3, weight_decay=1e-4, crop_scale_min=0.5, predictor_lr_scale=10.0),
    # SGD at lr 0.5 with milder crops: 77.1 % — above raw pixels (75.9 %) on the same bank.
    "simclr": dict(lr=0.5, crop_scale_min=0.5),
}


def config_help() -> str:
    lines = []
    for f in fields(Config):
        default = getattr(Config(), f.name)
        choice = f"  one of {', '.join(CHOICES[f.name])}" if f.name in CHOICES else ""
        lines.append(f"  {f.name:<20} {type(default).__name__:<6} default {default!r}{choice}")
    return "\n".join(lines)
