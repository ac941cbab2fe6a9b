"""Methods as points of one design space: the module, its losses and its targets."""
from siamdyn.methods.losses import (LOSSES, InfoNCE, NegativeCosine, NormalizedMSE, info_nce, negative_cosine,
                                    normalized_mse)
from siamdyn.methods.siamese import SiameseMethod, StepOutput, backbone_groups
from siamdyn.methods.targets import TARGETS, EMATarget, Target, ViewMeanTarget

__all__ = ["LOSSES", "TARGETS", "EMATarget", "InfoNCE", "NegativeCosine", "NormalizedMSE", "SiameseMethod",
           "StepOutput", "Target", "ViewMeanTarget", "backbone_groups", "info_nce", "negative_cosine", "normalized_mse"]
