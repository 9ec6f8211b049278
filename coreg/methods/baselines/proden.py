"""``proden``: PRODEN, progressive identification of true labels.

Lv, Xu, Feng, Niu, Geng and Sugiyama, "Progressive Identification of True Labels for
Partial-Label Learning", ICML 2020. Each sample keeps weights ``w_i`` over its candidate set S_i,
initialised uniformly (``w_ij = 1/|S_i|`` for j in S_i, 0 elsewhere). The loss is the weighted
cross-entropy::

    L = mean_i -sum_{j in S_i} w_ij log p_ij

and after each mini-batch the weights of that batch are re-identified from the same forward
pass's (detached) predictions restricted to the candidates::

    w_ij <- p_ij 1[j in S_i] / sum_{k in S_i} p_ik

The weights live in a registered buffer (``weights [N, K]``), so checkpoints hold them. One weak
view (crop + flip) per step; the paper trains without augmentation on small benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from coreg.methods.base import StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import (
    SingleNetConfig,
    SingleNetMethod,
    restrict,
    uniform_over_candidates,
)
from coreg.methods.registry import register_method

__all__ = ["ProdenConfig", "Proden", "weighted_ce"]


@dataclass(frozen=True)
class ProdenConfig(SingleNetConfig):
    """PRODEN has no hyper-parameters beyond the engine's and the batch size."""


def weighted_ce(logits: Tensor, weights: Tensor) -> Tensor:
    """``mean_i -sum_j w_ij log softmax(z_i)_j`` in float32 (``[B, K]`` each)."""
    if logits.shape != weights.shape or logits.dim() != 2:
        raise ValueError(f"logits and weights must both be [B, K], got {tuple(logits.shape)}, {tuple(weights.shape)}")
    return -(weights.float() * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


@register_method("proden", config=ProdenConfig)
class Proden(SingleNetMethod):
    """Weighted CE with per-sample candidate weights re-identified every step."""

    cfg: ProdenConfig
    weights: Tensor

    def __init__(self, cfg: ProdenConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.register_buffer("weights", uniform_over_candidates(data.candidates).cpu())

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        x = data.augment.weak(data.images[idx], ctx.generator)
        logits = self.net(x)[0]
        loss = weighted_ce(logits, self.weights[idx])
        with torch.no_grad():
            self.weights[idx] = restrict(F.softmax(logits.detach().float(), dim=1), data.candidates[idx])
        return StepOutput(losses={"loss": loss})
