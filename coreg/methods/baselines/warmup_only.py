"""``warmup_only``: Co-Reg's warm-up objective for the whole budget (an ablation baseline).

Co-Reg (AAAI 2025, see :mod:`coreg.methods.coreg`) warms each network up with the partial
cross-entropy on the candidate set plus a negative-entropy (confidence) penalty on one strong
view::

    L = mean_i -log(sum_{j in S_i} p_ij + eps) + w_ne * mean_i sum_j p_ij log p_ij

This baseline trains one network with exactly that loss (``PartialCELoss`` and
``negative_entropy``, shared with Co-Reg) for every epoch, with no division, co-training or
contrastive terms: it measures what the rest of Co-Reg adds. The default batch size is Co-Reg's
warm-up batch size (128 robust, 512 = 2 x 256 in the reference, the ``faithful`` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from coreg.config import check
from coreg.losses import PartialCELoss
from coreg.methods.base import StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import SingleNetConfig, SingleNetMethod, softmax32
from coreg.methods.registry import register_method
from coreg.methods.warmup import VIEWS, WEIGHTS, candidate_targets, warmup_objective

__all__ = ["WarmupOnlyConfig", "WarmupOnly"]


@dataclass(frozen=True)
class WarmupOnlyConfig(SingleNetConfig):
    """Warm-up-only settings.

    Attributes:
        batch_size: Co-Reg's warm-up batch: 128 (robust), 512 in the reference (``faithful``).
        neg_entropy_weight: weight of the negative-entropy penalty (1 in Co-Reg).
        warmup_view, warmup_mixup: as Co-Reg's (see :mod:`coreg.methods.warmup`).
    """

    FAITHFUL: ClassVar[dict[str, Any]] = {"batch_size": 512}

    batch_size: int = 128
    neg_entropy_weight: float = 1.0
    warmup_view: str = "strong"
    warmup_mixup: float = 0.0
    candidate_weights: str = "uniform"

    def validate(self) -> None:
        super().validate()
        check(self.warmup_view in VIEWS, f"warmup_view must be one of {list(VIEWS)}, got {self.warmup_view!r}")
        check(self.warmup_mixup >= 0, f"warmup_mixup must be >= 0, got {self.warmup_mixup}")
        check(self.candidate_weights in WEIGHTS,
              f"candidate_weights must be one of {list(WEIGHTS)}, got {self.candidate_weights!r}")
        check(self.neg_entropy_weight >= 0, f"neg_entropy_weight must be >= 0, got {self.neg_entropy_weight}")


@register_method("warmup_only", config=WarmupOnlyConfig)
class WarmupOnly(SingleNetMethod):
    """Partial CE + negative entropy on one strong view, every epoch."""

    cfg: WarmupOnlyConfig

    def __init__(self, cfg: WarmupOnlyConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.pce = PartialCELoss()
        self.targets = candidate_targets(data.candidates, data.scores, cfg.candidate_weights)

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        _, l_pce, l_ne = warmup_objective(lambda x: softmax32(self.net(x)[0]), data.images[idx], self.targets[idx],
                                          augment=data.augment, pce=self.pce, view=self.cfg.warmup_view,
                                          mixup_alpha=self.cfg.warmup_mixup, rng=ctx.rng, generator=ctx.generator)
        loss = l_pce + self.cfg.neg_entropy_weight * l_ne
        return StepOutput(losses={"loss": loss}, report={"pce": l_pce.detach(), "neg_entropy": l_ne.detach()})
