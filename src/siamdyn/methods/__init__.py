"""Methods as points of one design space: the module, its losses and its targets."""
from siamdyn.methods.losses import (LOSSES, InfoNCE, NegativeCosine, NormalizedMSE, SquaredL2, info_nce,
                                    negative_cosine, normalized_mse, squared_l2)
from siamdyn.methods.siamese import SiameseMethod, StepOutput, backbone_groups
from siamdyn.methods.targets import TARGETS, EMATarget, Target, ViewFeatureMeanTarget, ViewMeanTarget

__all__ = ["LOSSES", "TARGETS", "EMATarget", "InfoNCE", "NegativeCosine", "NormalizedMSE", "SiameseMethod",
           "SquaredL2", "StepOutput", "Target", "ViewFeatureMeanTarget", "ViewMeanTarget", "backbone_groups",
           "info_nce", "negative_cosine", "normalized_mse", "squared_l2"]
