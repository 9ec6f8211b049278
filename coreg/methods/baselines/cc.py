"""``cc``: the classifier-consistent PLL loss.

Feng, Lv, Han, Xu, Niu, Geng, An and Sugiyama, "Provably Consistent Partial-Label Learning",
NeurIPS 2020, the CC method: with ``p = softmax(f(x))`` the loss is the negative log of the
probability mass on the candidate set::

    L = mean_i -log sum_{j in S_i} p_ij

computed stably as ``logsumexp(z) - logsumexp(z restricted to S)``. No per-sample state. One weak
view per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from coreg.methods.base import StepContext, StepOutput
from coreg.methods.baselines._single_net import SingleNetConfig, SingleNetMethod
from coreg.methods.registry import register_method

__all__ = ["CCConfig", "ClassifierConsistent", "cc_loss"]


@dataclass(frozen=True)
class CCConfig(SingleNetConfig):
    """CC has no hyper-parameters beyond the engine's and the batch size."""


def cc_loss(logits: Tensor, candidates: Tensor) -> Tensor:
    """``mean_i -log sum_{j in S_i} softmax(z_i)_j`` in float32.

    Args:
        logits: ``[B, K]``.
        candidates: 0/1 ``[B, K]``; every row needs at least one candidate.

    Raises:
        ValueError: shapes disagree.
    """
    if logits.shape != candidates.shape or logits.dim() != 2:
        raise ValueError(f"logits and candidates must both be [B, K], got {tuple(logits.shape)}, "
                         f"{tuple(candidates.shape)}")
    z = logits.float()
    masked = z.masked_fill(candidates <= 0, float("-inf"))
    return (torch.logsumexp(z, dim=1) - torch.logsumexp(masked, dim=1)).mean()


@register_method("cc", config=CCConfig)
class ClassifierConsistent(SingleNetMethod):
    """Negative log candidate mass on one weak view."""

    cfg: CCConfig

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        x = data.augment.weak(data.images[idx], ctx.generator)
        return StepOutput(losses={"loss": cc_loss(self.net(x)[0], data.candidates[idx])})
