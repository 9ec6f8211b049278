"""Losses: one family per file, pure functions and stateless ``nn.Module`` s.

All of them compute in float32 internally, so they stay numerically safe when the network runs
under bf16 autocast.
"""

from coreg.losses.contrastive_loss import CONTRASTIVE_MODES, NoiseTolerantContrastiveLoss
from coreg.losses.partial_ce_loss import PartialCELoss, negative_entropy
from coreg.losses.prototype_loss import prototype_loss
from coreg.losses.semi_loss import linear_rampup, semi_loss

__all__ = ["CONTRASTIVE_MODES", "NoiseTolerantContrastiveLoss", "PartialCELoss", "negative_entropy",
           "prototype_loss", "linear_rampup", "semi_loss"]
