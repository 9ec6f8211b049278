"""``rc``: the risk-consistent PLL estimator.

Feng, Lv, Han, Xu, Niu, Geng, An and Sugiyama, "Provably Consistent Partial-Label Learning",
NeurIPS 2020, the RC method. The risk is rewritten with importance weights
``c_ij = p(y = j | x_i) / sum_{k in S_i} p(y = k | x_i)`` for j in S_i (0 otherwise), estimated
with the current model::

    L = mean_i -sum_j c_ij log p_ij

The confidences start uniform over each candidate set (``1/|S_i|``). As in the paper's algorithm,
after every model update the confidences of the mini-batch are re-estimated with the *updated*
model (a fresh forward pass of the same view, no gradient); the engine steps the optimiser after
``training_step`` returns, so this pass runs at the start of the next step and at the end of the
epoch (``SingleNetMethod.defer``). ``update="epoch"`` instead re-estimates every confidence once
per epoch from a pass over the training set (test view) before the epoch's steps.

PRODEN (:mod:`.proden`) has the same fixed point; it differs in re-identifying the weights from
the pre-update forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from coreg.config import check
from coreg.methods.base import EpochContext, EpochPlan, StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import (
    SingleNetConfig,
    SingleNetMethod,
    restrict,
    softmax32,
    uniform_over_candidates,
)
from coreg.methods.baselines.proden import weighted_ce
from coreg.methods.registry import register_method

__all__ = ["RCConfig", "RiskConsistent"]

UPDATES = ("batch", "epoch")


@dataclass(frozen=True)
class RCConfig(SingleNetConfig):
    """RC settings.

    Attributes:
        update: ``batch`` (after every step, the paper) or ``epoch`` (one pass per epoch).
        eval_batch_size: batch size of the per-epoch re-estimation pass.
    """

    update: str = "batch"
    eval_batch_size: int = 512

    def validate(self) -> None:
        super().validate()
        check(self.update in UPDATES, f"update must be one of {list(UPDATES)}, got {self.update!r}")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")


@register_method("rc", config=RCConfig)
class RiskConsistent(SingleNetMethod):
    """Confidence-weighted CE; confidences re-estimated from the updated model."""

    cfg: RCConfig
    confidence: Tensor

    def __init__(self, cfg: RCConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.register_buffer("confidence", uniform_over_candidates(data.candidates))

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        plan = super().on_epoch_start(ctx)
        if self.cfg.update == "epoch" and ctx.epoch > 0:
            self._reestimate_all(ctx)
        return plan

    @torch.no_grad()
    def _reestimate_all(self, ctx: EpochContext) -> None:
        data = ctx.data
        was = self.net.training
        self.net.eval()
        for idx in torch.arange(data.num_samples, device=data.device).split(self.cfg.eval_batch_size):
            p = softmax32(self.net(data.augment.test(data.images[idx]))[0])
            self.confidence[idx] = restrict(p, data.candidates[idx])
        self.net.train(was)

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        x = data.augment.weak(data.images[idx], ctx.generator)
        loss = weighted_ce(self.net(x)[0], self.confidence[idx])
        if self.cfg.update == "batch":
            self.defer(idx, x, data.candidates[idx])
        return StepOutput(losses={"loss": loss})

    def post_step_update(self, idx: Tensor, probs: Tensor, candidates: Tensor) -> None:
        self.confidence[idx] = restrict(probs, candidates)
