"""siamdyn: non-contrastive self-supervised learning (SimSiam, BYOL) and the instruments
that show why it does not collapse (docs/seed.md has the theory the code measures).

The public API (docs/api.md), usable in any training loop:

    SiameseMethod     one method of the design space around any backbone nn.Module
    CollapseMonitor   std, RankMe, cosines and a collapse detector from z and p
    gradient_split    ‖g1‖, ‖g2‖, cos(g1, g2) per named group (SiameseMethod);
    split_gradient    the same from two losses of your own loop
    ModuleSpeeds      ‖Δw‖/‖w‖ per named group across an optimiser step
    Config, PRESETS   the design space's knobs and its named points

siamdyn's own loop is `siamdyn.train.train(cfg, out)`; its commands are `siamdyn --help`.
"""

__version__ = "0.3.0"

from siamdyn.config import Config  # noqa: E402
from siamdyn.methods import LOSSES, TARGETS, SiameseMethod, StepOutput  # noqa: E402
from siamdyn.presets import PRESETS  # noqa: E402
from siamdyn.probes.collapse import CollapseDetector, CollapseMonitor, collapse_metrics, effective_rank  # noqa: E402
from siamdyn.probes.gradients import ModuleSpeeds, gradient_split, split_gradient  # noqa: E402

__all__ = ["LOSSES", "PRESETS", "TARGETS", "CollapseDetector", "CollapseMonitor", "Config", "ModuleSpeeds",
           "SiameseMethod", "StepOutput", "__version__", "collapse_metrics", "effective_rank", "gradient_split",
           "split_gradient"]

