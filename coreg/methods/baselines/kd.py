"""``kd``: knowledge distillation from the annotator's soft scores (the KD* baseline).

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015). The teacher is
the vision-language annotator, whose output is available only as probabilities: the
template-averaged class probabilities ``s`` (``TrainData.scores``). With temperature ``T`` the
teacher's softened distribution is ``s^(1/T) / sum_k s_k^(1/T)`` (= softmax(log s / T)) and the
loss is::

    L = T^2 * mean_i  -sum_j t_ij log softmax(f(x_i) / T)_j

on one weak view. ``T = 1`` is plain soft cross-entropy to the scores. The ``T^2`` factor keeps the
gradient scale independent of T, as in the paper. Candidate sets are not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from coreg.config import check
from coreg.methods.base import StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import SingleNetConfig, SingleNetMethod
from coreg.methods.registry import register_method

__all__ = ["KDConfig", "KnowledgeDistillation", "kd_loss", "soften"]


@dataclass(frozen=True)
class KDConfig(SingleNetConfig):
    """KD settings.

    Attributes:
        temperature: distillation temperature T (1 = soft CE to the scores).
    """

    temperature: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")


def soften(scores: Tensor, temperature: float) -> Tensor:
    """Teacher distribution at temperature T: ``s^(1/T)`` renormalised, ``[B, K]``."""
    s = scores.float().clamp_min(0.0)
    if temperature != 1.0:
        s = s.clamp_min(1e-12).pow(1.0 / temperature)
    return s / s.sum(1, keepdim=True).clamp_min(1e-12)


def kd_loss(logits: Tensor, scores: Tensor, *, temperature: float = 1.0) -> Tensor:
    """``T^2 * mean_i -sum_j soften(s)_ij log softmax(z_i / T)_j`` in float32.

    Args:
        logits: student logits ``[B, K]``.
        scores: teacher probabilities ``[B, K]``.
        temperature: T.

    Raises:
        ValueError: shapes disagree.
    """
    if logits.shape != scores.shape or logits.dim() != 2:
        raise ValueError(f"logits and scores must both be [B, K], got {tuple(logits.shape)}, {tuple(scores.shape)}")
    t = soften(scores, temperature)
    log_p = F.log_softmax(logits.float() / temperature, dim=1)
    return -(t * log_p).sum(1).mean() * temperature**2


@register_method("kd", config=KDConfig)
class KnowledgeDistillation(SingleNetMethod):
    """Student trained on the annotator's soft scores (see the module docstring).

    Raises:
        ValueError: the annotation has no scores.
    """

    cfg: KDConfig

    def __init__(self, cfg: KDConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        if data.scores is None:
            raise ValueError("kd needs annotator scores (an annotation with 'scores', e.g. from CLIP); "
                             "this annotation has candidate sets only")
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        data = ctx.data
        if data.scores is None:
            raise ValueError("kd needs annotator scores")
        x = data.augment.weak(data.images[idx], ctx.generator)
        logits = self.net(x)[0]
        loss = kd_loss(logits, data.scores[idx], temperature=self.cfg.temperature)
        return StepOutput(losses={"loss": loss})


