"""``lws``: the leveraged weighted loss for partial label learning.

Wen, Cao, Jiang, Wang, Feng, Lai and Sugiyama, "Leveraged Weighted Loss for Partial Label
Learning", ICML 2021. With a binary loss psi and per-sample label weights ``w``, the LW loss is::

    L = mean_i [ sum_{j in S_i} w_ij psi(f_j(x_i)) + beta * sum_{j not in S_i} w_ij psi(-f_j(x_i)) ]

The paper's LWS variant uses the sigmoid loss ``psi(z) = sigmoid(-z) = 1 / (1 + e^z)`` (so the
non-candidate term is ``sigmoid(f_j)``), and ``beta`` leverages the non-candidate part (beta in
{1, 2} in the paper's experiments). The weights are re-estimated from the model's softmax, each
part normalised on its own support::

    w_ij = p_ij / sum_{k in S_i} p_ik  (j in S_i),   w_ij = p_ij / sum_{k not in S_i} p_ik  (j not in S_i)

initialised uniformly on each part (``1/|S_i|`` and ``1/(K - |S_i|)``), and, as in the paper's
algorithm, re-estimated for the mini-batch with the updated model after each step (deferred to
the start of the next step, see ``SingleNetMethod.defer``). The weights are detached targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from coreg.config import check
from coreg.methods.base import StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import SingleNetConfig, SingleNetMethod
from coreg.methods.registry import register_method

__all__ = ["LWSConfig", "LeveragedWeighted", "lws_loss", "lws_weights"]


@dataclass(frozen=True)
class LWSConfig(SingleNetConfig):
    """LWS settings.

    Attributes:
        beta: weight of the non-candidate term (the "leverage").
        candidate_weight: weight of the candidate term (1 in the paper).
    """

    beta: float = 1.0
    candidate_weight: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        check(self.candidate_weight > 0, f"candidate_weight must be > 0, got {self.candidate_weight}")


def lws_weights(probs: Tensor, candidates: Tensor) -> Tensor:
    """Weights normalised separately on S and on its complement (zeros where a part is empty), ``[B, K]``."""
    y = (candidates > 0).to(probs.dtype)
    pos, neg = probs * y, probs * (1 - y)
    return pos / pos.sum(1, keepdim=True).clamp_min(1e-12) + neg / neg.sum(1, keepdim=True).clamp_min(1e-12)


def initial_lws_weights(candidates: Tensor) -> Tensor:
    """Uniform on S and uniform on its complement, ``[N, K]``."""
    y = (candidates > 0).float()
    return y / y.sum(1, keepdim=True).clamp_min(1.0) + (1 - y) / (1 - y).sum(1, keepdim=True).clamp_min(1.0)


def lws_loss(logits: Tensor, candidates: Tensor, weights: Tensor, *, beta: float = 1.0,
             candidate_weight: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """The LWS loss in float32.

    Args:
        logits: ``[B, K]``.
        candidates: 0/1 ``[B, K]``.
        weights: label weights ``[B, K]`` (constants).
        beta: non-candidate leverage.
        candidate_weight: candidate-term weight.

    Returns:
        ``(loss, candidate_term, non_candidate_term)``, the terms already weighted.

    Raises:
        ValueError: shapes disagree.
    """
    if not (logits.shape == candidates.shape == weights.shape) or logits.dim() != 2:
        raise ValueError(f"logits, candidates and weights must all be [B, K], got {tuple(logits.shape)}, "
                         f"{tuple(candidates.shape)}, {tuple(weights.shape)}")
    z = logits.float()
    y = (candidates > 0).float()
    w = weights.float().detach()
    pos = candidate_weight * (w * y * torch.sigmoid(-z)).sum(1).mean()
    neg = beta * (w * (1 - y) * torch.sigmoid(z)).sum(1).mean()
    return pos + neg, pos, neg


@register_method("lws", config=LWSConfig)
class LeveragedWeighted(SingleNetMethod):
    """Sigmoid LW loss with weights re-estimated after each step."""

    cfg: LWSConfig
    weights: Tensor

    def __init__(self, cfg: LWSConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.register_buffer("weights", initial_lws_weights(data.candidates))

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        x = data.augment.weak(data.images[idx], ctx.generator)
        cand = data.candidates[idx]
        loss, pos, neg = lws_loss(self.net(x)[0], cand, self.weights[idx], beta=self.cfg.beta,
                                  candidate_weight=self.cfg.candidate_weight)
        self.defer(idx, x, cand)
        return StepOutput(losses={"loss": loss}, report={"loss_candidates": pos.detach(),
                                                         "loss_non_candidates": neg.detach()})

    def post_step_update(self, idx: Tensor, probs: Tensor, candidates: Tensor) -> None:
        self.weights[idx] = lws_weights(probs, candidates)
