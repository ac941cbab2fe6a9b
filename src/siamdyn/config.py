"""One flat config for a run: plain values, a preset name and `key=value` overrides.

A method is a point in the design space of docs/design.md §1, so a preset (presets.py) is
nothing but a dict of overrides on the defaults below (fmnist-small, docs/design.md §5).
Each field carries its help text, its valid range if it is a number (bounds.py) and whether a
resume may change it; every value is validated in one place, `Config.validate`, with a
one-line error that names the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from siamdyn.inputs import open_input
from siamdyn.bounds import Bounds, check_bounds, show
from siamdyn.errors import ConfigError

DATASETS = ("fashion-mnist", "cifar10", "imagefolder", "synthetic", "synthetic-rgb")
INITS = ("kaiming", "orthogonal", "default", "zero")
GRAD_TERMS = ("predictor_branch", "both", "target_branch")
# why the bounds of some numbers are what they are (the error message says it)
RATIO_WHY = "the fallback crop of an 8x8 image is round(8 / ratio) or round(8 x ratio) pixels across, never 0"
JITTER_WHY = "the factor 1 - b must stay above 0"
SYNTHETIC_PIXELS = 2 ** 30  # images x side² of the synthetic sets: 4 GiB per float32 temporary


def knob(default: Any, help: str, choices: tuple[str, ...] = (), registry: str = "", resumable: bool = False,
         bounds: str = "", why: str = "") -> Any:
    """A config field with its help text, its allowed values (a tuple, or the name of a
    registry of methods/ or models/ that lists them), whether `--resume` may change it and,
    for a number, its valid range (`bounds`, e.g. "(0, 1e3]"; every number needs one, and
    tests/test_bounds.py checks that) with the reason for it the error message gives (`why`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "registry": registry,
                                            "resumable": resumable, "bounds": Bounds.parse(bounds) if bounds else None,
                                            "why": why})


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
    """One point of the design space and everything a run needs. Every field has a default, a help
    text and a declared range (`siamdyn train --help-config`); build one with `from_preset`, change
    fields with `replace`, check them with `validate`."""
    # --- data
    dataset: str = knob("fashion-mnist", "which loader reads data_dir", choices=DATASETS)
    data_dir: str = knob("", "data folder; '' = $SIAMDYN_DATA or the Debian package's folder", resumable=True)
    limit: int = knob(0, "class-balanced subset of the train split; 0 = all (synthetic: that many images, >= 600)",
                      bounds="[0, 1e9]")
    test_limit: int = knob(0, "class-balanced subset of the test split; 0 = all", bounds="[0, 1e9]")
    image_size: int = knob(0, "imagefolder: resize to this side, 0 = keep; synthetic: side (0 = 28)",
                           bounds="[0, 1024]")
    # --- augmentation (docs/design.md §5); RGB-only ops are skipped on 1 channel
    crop_scale_min: float = knob(0.2, "random resized crop: smallest area fraction", bounds="(0, 1]")
    crop_scale_max: float = knob(1.0, "random resized crop: largest area fraction", bounds="(0, 1]")
    crop_ratio_min: float = knob(3 / 4, "random resized crop: smallest aspect ratio", bounds="[0.1, 10]",
                                 why=RATIO_WHY)
    crop_ratio_max: float = knob(4 / 3, "random resized crop: largest aspect ratio", bounds="[0.1, 10]",
                                 why=RATIO_WHY)
    flip_p: float = knob(0.5, "probability of a horizontal flip", bounds="[0, 1]", why="a probability")
    jitter_p: float = knob(0.8, "probability of colour jitter", bounds="[0, 1]", why="a probability")
    brightness: float = knob(0.4, "jitter: brightness factor drawn from [1 - b, 1 + b]", bounds="[0, 1)",
                             why=JITTER_WHY)
    contrast: float = knob(0.4, "jitter: contrast factor drawn from [1 - c, 1 + c]", bounds="[0, 1)", why=JITTER_WHY)
    saturation: float = knob(0.4, "jitter: saturation factor (RGB only)", bounds="[0, 1)", why=JITTER_WHY)
    grayscale_p: float = knob(0.2, "probability of greyscale (RGB only)", bounds="[0, 1]", why="a probability")
    blur_p: float = knob(0.0, "probability of a gaussian blur", bounds="[0, 1]", why="a probability")
    # --- model
    backbone_width: int = knob(16, "ResNet-18 base width (stages w, 2w, 4w, 8w; feature 8w)", bounds="[1, 1024]")
    init: str = knob("kaiming", "weight init of conv/linear layers", choices=INITS)
    projector: str = knob("simsiam", "projector shape: SimSiam's 3 layers ending in BN (simsiam-no-out-bn: in a "
                          "plain Linear), or BYOL's MLP", registry="projector")
    proj_hidden: int = knob(512, "projector hidden width", bounds="[1, 65536]")
    proj_dim: int = knob(512, "projector output dimension d (z, p)", bounds="[1, 65536]")
    pred_hidden: int = knob(128, "predictor hidden width", bounds="[1, 65536]")
    # --- method: one point of the design space (docs/design.md §1)
    preset: str = knob("simsiam", "the named point of the design space these values started from")
    predictor: str = knob("mlp", "predictor h: an MLP, a linear map (DirectPred), or none (identity)",
                          registry="predictor")
    predictor_lr_scale: float = knob(1.0, "predictor lr = lr x this", bounds="[0, 1e3]")
    predictor_fixed_lr: bool = knob(True, "predictor lr not decayed by the cosine (SimSiam)")
    target: str = knob("online", "the target t: online z (SimSiam), an EMA copy (BYOL), f(x̄) (eq. 10), or the "
                       "feature mean over K views (view_feature_mean, eq. 7)",
                       registry="target")
    tau: float = knob(0.99, "EMA base: target <- tau target + (1 - tau) online; 1 = a fixed random target",
                      bounds="[0, 1]", why="0: the target follows the online net; 1: it never moves")
    tau_schedule: str = knob("cosine", "BYOL's tau -> 1 by a cosine over training, or fixed",
                             choices=("fixed", "cosine"))
    mean_views: int = knob(4, "K, the augmentations averaged for the target: in pixel space (view_mean, eq. 10) "
                           "or in feature space (view_feature_mean)", bounds="[1, 256]",
                           why="K, the views averaged per image")
    grad_terms: str = knob("predictor_branch", "gradient terms reaching the encoder (docs/seed.md §3): "
                           "predictor_branch = stop-gradient", choices=GRAD_TERMS)
    loss: str = knob("cosine", "pair loss D(p, t): cosine (SimSiam), mse (BYOL's normalised), l2 (eq. 10's "
                     "unnormalised squared distance), infonce", registry="loss")
    symmetrize: str = knob("mean", "combine the two pair losses: mean (SimSiam) or sum (BYOL)", choices=("mean", "sum"))
    temperature: float = knob(0.2, "InfoNCE temperature", bounds="[1e-3, 1e3]")
    # --- optimisation
    epochs: int = knob(5, "epochs; the lr and tau schedules span them", resumable=True, bounds="[0, 1e6]")
    max_steps: int = knob(0, "stop after this many steps (same schedule); 0 = epochs x steps per epoch", resumable=True,
                          bounds="[0, 1e9]")
    batch_size: int = knob(256, "images per step (global, over all processes)", bounds="[2, 2^20]",
                           why="BatchNorm needs two samples")
    optimizer: str = knob("sgd", "sgd (SimSiam), lars (BYOL), adamw", choices=("sgd", "lars", "adamw"))
    lr: float = knob(0.06, "learning rate per 256 images: lr_used = lr x batch_size / 256", bounds="(0, 1e3]")
    momentum: float = knob(0.9, "SGD/LARS momentum", bounds="[0, 1)", why="a momentum of 1 never forgets a gradient")
    weight_decay: float = knob(5e-4, "weight decay", bounds="[0, 10]")
    warmup_epochs: float = knob(0.0, "linear lr warm-up before the cosine, in epochs", bounds="[0, 1e6]",
                                why="epochs of linear lr warm-up")
    # --- run
    seed: int = knob(0, "seed of weights, data order and augmentations", bounds="(-2^40, 2^40)",
                     why="the data order's generator seed, seed x 100003 + epoch, must fit in 64 bits")
    device: str = knob("auto", "auto = cuda if visible, else cpu", choices=("auto", "cpu", "cuda"), resumable=True)
    threads: int = knob(0, "torch threads; 0 = all cores", resumable=True, bounds="[0, 4096]")
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
    conv_weight_grad: str = knob("auto", "bf16 CPU convolution weight gradients: auto = time oneDNN against one "
                                 "im2col matmul per shape and keep the faster (off under deterministic; "
                                 "docs/design.md §7); torch = oneDNN only", choices=("auto", "torch"))
    fuse_views: bool = knob(False, "encode both views in one 2B pass; BN statistics then pool the views")
    parallel_views: str = knob("auto", "each view's forward and backward on a thread of its own with its share of "
                               "the cores (CPU); auto = on for a single-process CPU run with >= 2 threads and "
                               "term 2 off (docs/design.md §7)", choices=("auto", "on", "off"), resumable=True)
    log_every: int = knob(1, "steps between metric lines (collapse std, RankMe, loss)", resumable=True,
                          bounds="[1, 1e9]")
    knn_every: int = knob(1, "epochs between kNN evaluations; 0 = only at the end", resumable=True,
                          bounds="[0, 1e6]")
    tensorboard: bool = knob(False, "also write metrics.jsonl's numbers to OUT/tensorboard (pip install "
                             "'siamdyn[tensorboard]')", resumable=True)
    wandb: str = knob("", "also log metrics.jsonl's numbers to this W&B project ('' = off; pip install "
                      "'siamdyn[wandb]'; WANDB_MODE=offline logs without an account, into $WANDB_DIR or ./wandb)",
                      resumable=True)
    knn_k: int = knob(200, "kNN neighbours", bounds="[1, 1e6]")
    knn_temperature: float = knob(0.1, "weighted kNN temperature", bounds="[0.02, 1e3]",
                                  why="kNN weights exp(1/T) overflow float32 below T = 0.012")
    knn_targets: str = knob("", "kNN levels (%) whose first crossing time the summary reports; '' = the "
                            "dataset's raw-pixel kNN (docs/recipe.md); 'none' = off")
    ckpt_every: int = knob(0, "steps between mid-epoch checkpoints; 0 = epoch ends only", resumable=True,
                           bounds="[0, 1e9]")
    probe_every: int = knob(50, "steps between gradient-split / module-speed probes; 0 = off", resumable=True,
                            bounds="[0, 1e9]")
    probe_first: int = knob(0, "also probe every one of the first N steps (the split before any collapse)",
                            resumable=True, bounds="[0, 1e9]")
    heldout_every: int = knob(0, "steps between collapse readings on a fixed held-out batch (eval mode); 0 = off",
                              resumable=True, bounds="[0, 1e9]")
    heldout_images: int = knob(2000, "test images in the held-out batch", resumable=True, bounds="[0, 1e9]")
    collapse_rank_floor: float = knob(2.0, "detector: RankMe(z) below this counts as collapse; 0 = std only",
                                      resumable=True, bounds="[0, 65536]", why="0 turns the rank test off")
    collapse_patience: int = knob(50, "detector: steps the condition must hold", resumable=True, bounds="[1, 1e9]")
    rank_every: int = knob(0, "steps between the per-step metrics' RankMe readings (three eigensolves: z, z "
                           "centred, features); 0 = auto: every logged step on a CPU, every 10th on a GPU "
                           "(docs/design.md §8)", resumable=True,
                           bounds="[0, 1e9]")
    stop_on_collapse: bool = knob(False, "end the run (checkpoint + kNN) when the detector fires", resumable=True)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_preset(cls, preset: str = "simsiam", overrides: dict[str, Any] | None = None) -> "Config":
        """The named point of the design space (`PRESETS`), then `overrides` ({field: value}), validated."""
        from siamdyn.presets import PRESETS
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}{_did_you_mean(preset, PRESETS)}; "
                              f"choose one of: {', '.join(PRESETS)}")
        cfg = cls(preset=preset, **PRESETS[preset])
        if overrides:
            cfg = cfg.replace(**overrides)
        return cfg.validate()

    def replace(self, **changes: Any) -> "Config":
        """A copy with `changes` coerced to each field's type; an unknown key is a ConfigError
        (call `validate` on the result to check the values)."""
        names = {f.name for f in fields(self)}
        for key in changes:
            if key not in names:
                raise ConfigError(f"unknown config key {key!r}{_did_you_mean(key, names)}; "
                                  "see `siamdyn train --help-config` for the list")
        return dataclasses.replace(self, **{k: coerce_value(self, k, v) for k, v in changes.items()})

    def to_dict(self) -> dict[str, Any]:
        """Every field as a plain value ({name: value}), as config.yaml stores it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """The defaults with `d`'s values ({name: value}, as `to_dict` gives), validated."""
        base = cls()
        return base.replace(**d).validate()

    @staticmethod
    def read_yaml(path: str, run: bool = False) -> dict[str, Any]:
        """The key: value mapping of a YAML file (a run's config.yaml nests it under `config:`). `run`: a run's own
        config.yaml, refused without `config:` and `versions:` (cut short, its missing fields would read as defaults)"""
        try:
            with open_input(path, encoding="utf-8") as f:
                d = yaml.safe_load(f) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}; check the path") from None
        except UnicodeDecodeError:  # a binary file given as --config
            raise ConfigError(f"config file {path} is not UTF-8 text; pass a YAML file of key: value lines") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML ({first}); fix its syntax") from None
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value")
        lacking = [k for k in ("config", "versions") if not isinstance(d.get(k), dict)] if run else []
        if lacking:
            raise ConfigError(f"{path} is incomplete (no `{lacking[0]}:` mapping; siamdyn writes `config:` and "
                              "then `versions:`): it was cut short or replaced; restore it or train the run again")
        d = d.get("config", d)
        if not isinstance(d, dict):
            raise ConfigError(f"config file {path}: `config:` must hold a mapping of key: value")
        return dict(d)

    @classmethod
    def from_yaml(cls, path: str, run: bool = False) -> "Config":
        """The config of a YAML file (a run's config.yaml: `run`, or `preset:` plus fields), validated."""
        d = cls.read_yaml(path, run)
        preset = d.pop("preset", "simsiam")
        return cls.from_preset(preset, d)

    # ------------------------------------------------------------------ derived
    def resolved_data_dir(self) -> str:
        """`data_dir`, else $SIAMDYN_DATA, else the dataset's default folder."""
        from siamdyn.data.datasets import DEFAULT_DATA_DIRS
        return self.data_dir or os.environ.get("SIAMDYN_DATA", DEFAULT_DATA_DIRS.get(self.dataset, ""))

    @property
    def memory_format(self):
        """The images' torch memory format: channels_last when `channels_last` says so (auto: width >= 16)."""
        import torch
        on = self.channels_last == "on" or (self.channels_last == "auto" and self.backbone_width >= 16)
        return torch.channels_last if on else torch.contiguous_format

    @property
    def scaled_lr(self) -> float:
        """`lr` × batch_size / 256, the linear scaling rule of the papers."""
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
        """Self, once every value lies in its declared range and the values fit together; else a ConfigError."""
        for f in fields(self):
            allowed, value = field_choices(f), getattr(self, f.name)
            if allowed and value not in allowed:
                raise ConfigError(f"{f.name}={value!r} is not valid{_did_you_mean(value, allowed)}; "
                                  f"choose one of: {', '.join(allowed)}")
        for f in fields(self):  # one check for every number: its declared range (finite, so NaN/inf fail too)
            value, bounds = getattr(self, f.name), f.metadata.get("bounds")
            if bounds is not None:
                check_bounds(f.name, value, bounds, f.metadata["why"])
            elif isinstance(value, float) and not math.isfinite(value):  # tests/test_bounds.py: none should get here
                raise ConfigError(f"{f.name}={value} must be a finite number")
        self._check_combinations()
        return self

    def _check_combinations(self) -> None:
        """The checks that involve more than one field (each field's own range is checked above)."""
        _check(self.crop_scale_min <= self.crop_scale_max, "need 0 < crop_scale_min <= crop_scale_max <= 1")
        _check(self.crop_ratio_min <= self.crop_ratio_max, "need 0 < crop_ratio_min <= crop_ratio_max")
        try:
            levels = self.knn_target_levels
        except ValueError:
            raise ConfigError(f"knn_targets={self.knn_targets!r} must be comma-separated percentages, "
                              "'' or 'none'") from None
        _check(all(0 < x <= 100 for x in levels), "knn_targets must lie in (0, 100]")
        if self.dataset.startswith("synthetic"):  # generated in memory, as float32 temporaries of n x side²
            n, side = max(600, self.limit), self.image_size or 28
            _check(n * side * side <= SYNTHETIC_PIXELS,
                   f"synthetic data of {n} images of {side}x{side} would need {n * side * side * 4 / 2 ** 30:.0f} GiB "
                   f"per temporary (at most {SYNTHETIC_PIXELS * 4 // 2 ** 30} GiB); lower limit or image_size")
        if self.image_size and self.dataset in ("fashion-mnist", "cifar10"):
            raise ConfigError(f"image_size={self.image_size} applies to imagefolder and synthetic data only; "
                              f"{self.dataset} images keep their size — drop image_size")
        if self.target == "ema" and self.grad_terms != "predictor_branch":
            raise ConfigError("target=ema receives no gradient, so grad_terms must be predictor_branch; "
                              "use target=online to study term 2")
        if self.heldout_every and self.heldout_images < 2:  # readings of one image have no spread: none were taken
            raise ConfigError(f"heldout_every={self.heldout_every} asks for held-out readings but heldout_images="
                              f"{self.heldout_images} gives none (they need 2 images or more); raise heldout_images "
                              "or set heldout_every=0")
        if self.loss == "infonce" and self.target in ("view_mean", "view_feature_mean"):
            raise ConfigError("loss=infonce needs two views per image; use target=online or ema")


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
            if isinstance(value, str) and "e" in value.lower():  # 1e6 is an int; 2.5e0 is not, nor is inf
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                return int(number)
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int("inf"), float(10 ** 400)
        bounds = _field_bounds(cfg, key)
        where = f" in {bounds.text}" if bounds else ""
        raise ConfigError(f"{key}={show(value)} must be of type {kind.__name__}{where}") from None


def _field_bounds(obj: Any, key: str) -> Bounds | None:
    """The declared range of field `key` of a dataclass (a Config, or theory's LinearSetup), if any."""
    return next((f.metadata.get("bounds") for f in fields(obj) if f.name == key), None)


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
        extra += f" (in {f.metadata['bounds'].text})" if f.metadata.get("bounds") else ""
        tag = " [resumable]" if f.metadata["resumable"] else ""
        lines.append(f"  {f.name:<20} {type(f.default).__name__:<5} {f.default!r:<18} {f.metadata['help']}{extra}{tag}")
    return "\n".join(lines)
