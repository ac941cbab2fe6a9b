"""One flat config for a run: plain values, a preset name and `key=value` overrides.

A method is a point in the design space of docs/design.md §1, so a preset (presets.py) is
nothing but a dict of overrides on the defaults below (fmnist-small, docs/design.md §5).
Each field carries its help text and whether a resume may change it; every value is
validated in one place, `Config.validate`, with a one-line error that names the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from siamdyn.errors import ConfigError

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic", "synthetic-rgb")
INITS = ("kaiming", "orthogonal", "default", "zero")
GRAD_TERMS = ("predictor_branch", "both", "target_branch")


def knob(default: Any, help: str, choices: tuple[str, ...] = (), registry: str = "", resumable: bool = False) -> Any:
    """A config field with its help text, its allowed values (a tuple, or the name of a
    registry of methods/ or models/ that lists them) and whether `--resume` may change it."""
    return field(default=default, metadata={"help": help, "choices": choices, "registry": registry,
                                            "resumable": resumable})


def registry_names(kind: str) -> tuple[str, ...]:
    """The names a registry accepts: adding a loss, target or head there adds it here."""
    from siamdyn.methods.losses import LOSSES
    from siamdyn.methods.targets import TARGETS
    from siamdyn.models.heads import PREDICTORS, PROJECTORS
    return tuple({"loss": LOSSES, "target": TARGETS, "predictor": PREDICTORS, "projector": PROJECTORS}[kind])


def field_choices(f: dataclasses.Field) -> tuple[str, ...]:
    return registry_names(f.metadata["registry"]) if f.metadata.get("registry") else f.metadata.get("choices", ())


@dataclass
class Config:
    # --- data
    dataset: str = knob("fashion-mnist", "which loader reads data_dir", choices=DATASETS)
    data_dir: str = knob("", "data folder; '' = $SIAMDYN_DATA or the Debian package's folder", resumable=True)
    limit: int = knob(0, "class-balanced subset of the train split; 0 = all (synthetic: that many images, >= 600)")
    test_limit: int = knob(0, "class-balanced subset of the test split; 0 = all")
    image_size: int = knob(0, "imagefolder: resize to this side, 0 = keep; synthetic: side (0 = 28)")
    # --- augmentation (docs/design.md §5); RGB-only ops are skipped on 1 channel
    crop_scale_min: float = knob(0.2, "random resized crop: smallest area fraction")
    crop_scale_max: float = knob(1.0, "random resized crop: largest area fraction")
    crop_ratio_min: float = knob(3 / 4, "random resized crop: smallest aspect ratio")
    crop_ratio_max: float = knob(4 / 3, "random resized crop: largest aspect ratio")
    flip_p: float = knob(0.5, "probability of a horizontal flip")
    jitter_p: float = knob(0.8, "probability of colour jitter")
    brightness: float = knob(0.4, "jitter: brightness factor drawn from [1 - b, 1 + b]")
    contrast: float = knob(0.4, "jitter: contrast factor drawn from [1 - c, 1 + c]")
    saturation: float = knob(0.4, "jitter: saturation factor (RGB only)")
    grayscale_p: float = knob(0.2, "probability of greyscale (RGB only)")
    blur_p: float = knob(0.0, "probability of a gaussian blur")
    # --- model
    backbone_width: int = knob(16, "ResNet-18 base width (stages w, 2w, 4w, 8w; feature 8w)")
    init: str = knob("kaiming", "weight init of conv/linear layers", choices=INITS)
    projector: str = knob("simsiam", "projector shape: SimSiam's 3 layers ending in BN, or BYOL's MLP",
                          registry="projector")
    proj_hidden: int = knob(512, "projector hidden width")
    proj_dim: int = knob(512, "projector output dimension d (z, p)")
    pred_hidden: int = knob(128, "predictor hidden width")
    # --- method: one point of the design space (docs/design.md §1)
    preset: str = knob("simsiam", "the named point of the design space these values started from")
    predictor: str = knob("mlp", "predictor h: an MLP, a linear map (DirectPred), or none (identity)",
                          registry="predictor")
    predictor_lr_scale: float = knob(1.0, "predictor lr = lr x this")
    predictor_fixed_lr: bool = knob(True, "predictor lr not decayed by the cosine (SimSiam)")
    target: str = knob("online", "the target t: online z (SimSiam), an EMA copy (BYOL), f(x̄) (eq. 10)",
                       registry="target")
    tau: float = knob(0.99, "EMA base: target <- tau target + (1 - tau) online; 1 = a fixed random target")
    tau_schedule: str = knob("cosine", "BYOL's tau -> 1 by a cosine over training, or fixed",
                             choices=("fixed", "cosine"))
    mean_views: int = knob(4, "K, the augmentations averaged in pixel space for eq. (10)")
    grad_terms: str = knob("predictor_branch", "gradient terms reaching the encoder (docs/seed.md §3): "
                           "predictor_branch = stop-gradient", choices=GRAD_TERMS)
    loss: str = knob("cosine", "pair loss D(p, t)", registry="loss")
    symmetrize: str = knob("mean", "combine the two pair losses: mean (SimSiam) or sum (BYOL)", choices=("mean", "sum"))
    temperature: float = knob(0.2, "InfoNCE temperature")
    # --- optimisation
    epochs: int = knob(5, "epochs; the lr and tau schedules span them", resumable=True)
    max_steps: int = knob(0, "stop after this many steps (same schedule); 0 = epochs x steps per epoch", resumable=True)
    batch_size: int = knob(256, "images per step (global, over all processes)")
    optimizer: str = knob("sgd", "sgd (SimSiam), lars (BYOL), adamw", choices=("sgd", "lars", "adamw"))
    lr: float = knob(0.06, "learning rate per 256 images: lr_used = lr x batch_size / 256")
    momentum: float = knob(0.9, "SGD/LARS momentum")
    weight_decay: float = knob(5e-4, "weight decay")
    warmup_epochs: float = knob(0.0, "linear lr warm-up before the cosine, in epochs")
    # --- run
    seed: int = knob(0, "seed of weights, data order and augmentations")
    device: str = knob("auto", "auto = cuda if visible, else cpu", choices=("auto", "cpu", "cuda"), resumable=True)
    threads: int = knob(0, "torch threads; 0 = all cores", resumable=True)
    deterministic: bool = knob(False, "torch.use_deterministic_algorithms (bit-exact resumes)")
    sync_bn: bool = knob(True, "under torchrun: BatchNorm statistics over the global batch (SimSiam paper)")
    channels_last: str = knob("auto", "NHWC convolutions; auto = on for backbone_width >= 16 (docs/design.md "
                              "'Speed notes')", choices=("auto", "on", "off"))
    precision: str = knob("auto", "bf16 = bf16 autocast of forward/backward; auto = bf16 where the hardware has "
                          "native bf16 units, else fp32 (docs/design.md §7)", choices=("auto", "fp32", "bf16"))
    exact_batchnorm: bool = knob(False, "sum fp32 channels_last BatchNorm statistics exactly on CPUs (NCHW's "
                                 "gradient rounding, not 16x it; 1.00-1.06x the fp32 step; docs/design.md §7)")
    compile: str = knob("auto", "torch.compile the training forward; auto = on for CUDA runs of >= 5000 steps, "
                        "where it pays back its compile time (docs/design.md §7)", choices=("auto", "on", "off"),
                        resumable=True)
    fuse_views: bool = knob(False, "encode both views in one 2B pass; BN statistics then pool the views")
    log_every: int = knob(1, "steps between metric lines (collapse std, RankMe, loss)", resumable=True)
    knn_every: int = knob(1, "epochs between kNN evaluations; 0 = only at the end", resumable=True)
    tensorboard: bool = knob(False, "also write metrics.jsonl's numbers to OUT/tensorboard (pip install "
                             "'siamdyn[tensorboard]')", resumable=True)
    knn_k: int = knob(200, "kNN neighbours")
    knn_temperature: float = knob(0.1, "weighted kNN temperature")
    knn_targets: str = knob("", "kNN levels (%) whose first crossing time the summary reports; '' = the "
                            "dataset's raw-pixel kNN (docs/recipe.md); 'none' = off")
    ckpt_every: int = knob(0, "steps between mid-epoch checkpoints; 0 = epoch ends only", resumable=True)
    probe_every: int = knob(50, "steps between gradient-split / module-speed probes; 0 = off", resumable=True)
    probe_first: int = knob(0, "also probe every one of the first N steps (the split before any collapse)",
                            resumable=True)
    heldout_every: int = knob(0, "steps between collapse readings on a fixed held-out batch (eval mode); 0 = off",
                              resumable=True)
    heldout_images: int = knob(2000, "test images in the held-out batch", resumable=True)
    collapse_rank_floor: float = knob(2.0, "detector: RankMe(z) below this counts as collapse; 0 = std only",
                                      resumable=True)
    collapse_patience: int = knob(50, "detector: steps the condition must hold", resumable=True)
    rank_every: int = knob(0, "steps between the per-step metrics' RankMe readings (two eigensolves); 0 = auto: "
                           "every logged step on a CPU, every 10th on a GPU (docs/design.md §8)", resumable=True)
    stop_on_collapse: bool = knob(False, "end the run (checkpoint + kNN) when the detector fires", resumable=True)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, preset: str = "simsiam", overrides: dict[str, Any] | None = None) -> "Config":
        from siamdyn.presets import PRESETS
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
        return dataclasses.replace(self, **{k: coerce_value(self, k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        base = cls()
        return base.replace(**d).validate()

    @staticmethod
    def read_yaml(path: str) -> dict[str, Any]:
        """The key: value mapping of a YAML file (a run's config.yaml nests it under `config:`)."""
        try:
            with open(path) as f:
                d = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}; check the path") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML ({first}); fix its syntax") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        d = d.get("config", d)
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path}: `config:` must hold a mapping of key: value")
        return dict(d)

    @classmethod
    def from_yaml(cls, path: str) -> "Config":
        d = cls.read_yaml(path)
        preset = d.pop("preset", "simsiam")
        return cls.from_preset(preset, d)

    # ------------------------------------------------------------------ derived
    def resolved_data_dir(self) -> str:
        from siamdyn.data.datasets import DEFAULT_DATA_DIRS
        return self.data_dir or os.environ.get("SIAMDYN_DATA", DEFAULT_DATA_DIRS.get(self.dataset, ""))

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
        """kNN levels (%) for time-to-accuracy: the user's, or the dataset's raw-pixel kNN."""
        from siamdyn.presets import RAW_PIXEL_KNN
        if self.knn_targets == "none":
            return []
        if not self.knn_targets:
            return list(RAW_PIXEL_KNN.get(self.dataset, ()))
        return [float(x) for x in self.knn_targets.split(",")]

    # ------------------------------------------------------------------ checks
    def validate(self) -> "Config":
        for f in fields(self):
            allowed, value = field_choices(f), getattr(self, f.name)
            if allowed and value not in allowed:
                raise ConfigError(f"{f.name}={value!r} is not valid{_did_you_mean(value, allowed)}; "
                                  f"choose one of: {', '.join(allowed)}")
        for f in fields(self):
            value = getattr(self, f.name)
            _check(not isinstance(value, float) or math.isfinite(value), f"{f.name}={value} must be a finite number")
        _check(self.lr > 0, "lr must be > 0")
        _check(0 <= self.tau <= 1, "tau must be in [0, 1] (0: the target follows the online net; 1: it never moves)")
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
        _check(self.warmup_epochs <= 1e6, "warmup_epochs must be <= 1e6 (epochs of linear lr warm-up)")
        # the data order seeds a generator with seed × 100003 + epoch, which must fit in 64 bits
        _check(abs(self.seed) < 2 ** 40, "seed must be an integer with |seed| < 2^40")
        _check(self.temperature > 0 and self.knn_temperature > 0, "temperatures must be > 0")
        _check(self.knn_k >= 1, "knn_k must be >= 1")
        _check(self.log_every >= 1, "log_every must be >= 1")
        try:
            levels = self.knn_target_levels
        except ValueError:
            raise ConfigError(f"knn_targets={self.knn_targets!r} must be comma-separated percentages, "
                              "'' or 'none'") from None
        _check(all(0 < x <= 100 for x in levels), "knn_targets must lie in (0, 100]")
        _check(self.collapse_patience >= 1, "collapse_patience must be >= 1")
        _check(self.collapse_rank_floor >= 0, "collapse_rank_floor must be >= 0 (0 turns the rank test off)")
        _check(min(self.knn_every, self.ckpt_every, self.threads, self.image_size, self.probe_every, self.probe_first,
                   self.heldout_every, self.heldout_images, self.rank_every) >= 0,
               "knn_every, ckpt_every, probe_every, probe_first, heldout_every, heldout_images, rank_every, threads "
               "and image_size must be >= 0")
        if self.image_size and self.dataset in ("fashion-mnist", "cifar10"):
            raise ConfigError(f"image_size={self.image_size} applies to imagefolder and synthetic data only; "
                              f"{self.dataset} images keep their size — drop image_size")
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


LEGACY_SWITCHES = {"compile"}  # once true/false; now auto/on/off, and older configs still load
ON_OFF = {"true": "on", "false": "off"}


def coerce_value(cfg: Config, key: str, value: Any) -> Any:
    """Turn a `--set key=value` string (or a YAML value) into the field's type."""
    current = getattr(cfg, key)
    kind = type(current)
    if key in LEGACY_SWITCHES and str(value).lower() in ON_OFF:
        return ON_OFF[str(value).lower()]
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


def resumable_fields() -> set[str]:
    """Fields that `--resume` may change without changing the trajectory's meaning."""
    return {f.name for f in fields(Config) if f.metadata["resumable"]}


def config_help() -> str:
    lines = []
    for f in fields(Config):
        choices = field_choices(f)
        extra = f" (one of {', '.join(choices)})" if choices else ""
        tag = " [resumable]" if f.metadata["resumable"] else ""
        lines.append(f"  {f.name:<20} {type(f.default).__name__:<5} {f.default!r:<18} {f.metadata['help']}{extra}{tag}")
    return "\n".join(lines)
