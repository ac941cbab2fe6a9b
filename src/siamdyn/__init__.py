"""siamdyn: non-contrastive self-supervised learning (SimSiam, BYOL) and the instruments
that show why it does not collapse (docs/seed.md has the theory the code measures).

The public API (docs/api.md), usable in any training loop:

    SiameseMethod     one method of the design space around any backbone nn.Module
    CollapseMonitor   std, RankMe, cosines and a collapse detector from z and p
    gradient_split    ‖g1‖, ‖g2‖, cos(g1, g2) per named group (SiameseMethod);
    split_gradient    the same from two losses of your own loop
    ModuleSpeeds      ‖Δw‖/‖w‖ per named group across an optimiser step
    Config, PRESETS   the design space's knobs and its named points
    BatchAugment      the batched augmentations (AugmentParams, channel_stats)
    weighted_knn      kNN on frozen features (euclidean_knn; encoder_features embeds a set)
    linear_probe      logistic regression on frozen features
    simsiam_projector the heads as standalone modules (simsiam_predictor, byol_mlp, linear_predictor)
    HookMonitor       the instruments by forward hooks on modules you name: the loop stays as it is
    as_logger         where the numbers go: a callable, TensorBoardLogger, WandbLogger (siamdyn.loggers);
                      siamdyn.lightning.SiamdynCallback attaches the instruments to a LightningModule

siamdyn's own loop is `siamdyn.train.train(cfg, out)`; its commands are `siamdyn --help`.
"""

__version__ = "0.3.0"

import importlib  # noqa: E402
from typing import Any  # noqa: E402

# The API is imported on first use (PEP 562), not with the package: `siamdyn COMMAND` must
# reach cli.py's Ctrl-C handling before torch loads, and importing any submodule imports this.
_EXPORTS = {"Config": "siamdyn.config", "LOSSES": "siamdyn.methods", "TARGETS": "siamdyn.methods",
            "SiameseMethod": "siamdyn.methods", "StepOutput": "siamdyn.methods", "PRESETS": "siamdyn.presets",
            "CollapseDetector": "siamdyn.probes.collapse", "CollapseMonitor": "siamdyn.probes.collapse",
            "collapse_metrics": "siamdyn.probes.collapse", "effective_rank": "siamdyn.probes.collapse",
            "ModuleSpeeds": "siamdyn.probes.gradients", "gradient_split": "siamdyn.probes.gradients",
            "split_gradient": "siamdyn.probes.gradients"}

__all__ = ["LOSSES", "PRESETS", "TARGETS", "CollapseDetector", "CollapseMonitor", "Config", "ModuleSpeeds",
           "SiameseMethod", "StepOutput", "__version__", "collapse_metrics", "effective_rank", "gradient_split",
           "split_gradient"]

# The pieces siamdyn's own loop is built from, for a loop that wants them: batched augmentations,
# kNN and linear-probe evaluation on frozen features, the projection and prediction heads.
_PIECES = {"siamdyn.data.augment": ["AugmentParams", "BatchAugment", "channel_stats"],
           "siamdyn.eval": ["encoder_features", "euclidean_knn", "linear_probe", "weighted_knn"],
           "siamdyn.models.heads": ["byol_mlp", "linear_predictor", "simsiam_predictor", "simsiam_projector"]}
_EXPORTS.update({name: module for module, names in _PIECES.items() for name in names})
__all__ += [name for names in _PIECES.values() for name in names]

# Instruments attached by forward hooks (no change to the loop), and the loggers every instrument and
# `siamdyn train` write to. The Lightning callback is `siamdyn.lightning.SiamdynCallback`: it imports
# Lightning, an optional extra, so it is not exported here.
_HOOKS_AND_LOGGERS = {"siamdyn.probes.hooks": ["HookMonitor"],
                      "siamdyn.loggers": ["CallableLogger", "Logger", "TensorBoardLogger", "WandbLogger", "as_logger"]}
_EXPORTS.update({name: module for module, names in _HOOKS_AND_LOGGERS.items() for name in names})
__all__ += [name for names in _HOOKS_AND_LOGGERS.values() for name in names]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:  # `import siamdyn; siamdyn.methods` worked while the package imported its submodules eagerly
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
