"""``cr_dpll``: consistency regularisation for deep partial label learning.

Wu, Wang and Zhang, "Revisiting Consistency Regularization for Deep Partial Label Learning",
ICML 2022. Each sample is seen through ``A = 3`` views per step: one weak view (crop + flip) and
two strong views (crop + flip + RandAugment/cutout). With ``f(v)`` the softmax of view v and a
per-sample target ``q_i`` supported on the candidate set S_i::

    L_sup  = mean_i -sum_{j not in S_i} log(1 - f_j(weak(x_i)))            (non-candidates pushed down)
    L_cons = sum_{v in views} KL(q_i || f(v(x_i)))   (batch mean)
    L      = L_sup + lambda(t) L_cons,   lambda(t) = lam * min(t / T_ramp, 1), t the (fractional) epoch

The target starts uniform on S_i and after each step becomes the candidate-restricted,
renormalised geometric mean of the views' (detached) predictions::

    q_ij <- (prod_v f_j(v(x_i)))^(1/A) 1[j in S_i] / Z_i

It lives in the registered buffer ``targets [N, K]``. The consistency term of a step uses the
target from before that step's update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from coreg.config import check
from coreg.methods.base import StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import (
    SingleNetConfig,
    SingleNetMethod,
    restrict,
    uniform_over_candidates,
)
from coreg.methods.registry import register_method

__all__ = ["CRDPLLConfig", "CRDPLL", "geometric_target", "non_candidate_loss", "consistency_loss"]


@dataclass(frozen=True)
class CRDPLLConfig(SingleNetConfig):
    """CR-DPLL settings.

    Attributes:
        lam: final weight of the consistency term.
        ramp_epochs: epochs of the linear ramp of the consistency weight (from epoch 0).
        num_strong: strong views per sample (2 in the paper).
    """

    lam: float = 1.0
    ramp_epochs: int = 100
    num_strong: int = 2

    def validate(self) -> None:
        super().validate()
        check(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        check(self.ramp_epochs >= 1, f"ramp_epochs must be >= 1, got {self.ramp_epochs}")
        check(self.num_strong >= 1, f"num_strong must be >= 1, got {self.num_strong}")


def geometric_target(probs: list[Tensor], candidates: Tensor) -> Tensor:
    """Candidate-restricted geometric mean of several views' probabilities, ``[B, K]`` (rows sum to 1)."""
    log_mean = torch.stack([p.float().clamp_min(1e-12).log() for p in probs]).mean(0)
    # Subtract the row max before exp: the renormalisation makes the result identical, and it cannot underflow.
    g = (log_mean - log_mean.max(1, keepdim=True).values).exp()
    return restrict(g, candidates)


def non_candidate_loss(probs: Tensor, candidates: Tensor) -> Tensor:
    """``mean_i -sum_{j not in S_i} log(1 - p_ij)`` (1 - p clamped at 1e-7), float32."""
    y = (candidates > 0).float()
    return -((1 - y) * torch.log((1 - probs.float()).clamp_min(1e-7))).sum(1).mean()


def consistency_loss(logits: Tensor, target: Tensor) -> Tensor:
    """``KL(target || softmax(logits))`` summed over classes, averaged over rows (0 log 0 = 0)."""
    log_p = F.log_softmax(logits.float(), dim=1)
    t = target.float()
    return (torch.special.xlogy(t, t) - t * log_p).sum(1).mean()


@register_method("cr_dpll", config=CRDPLLConfig)
class CRDPLL(SingleNetMethod):
    """Weak + strong views, consistency to the geometric-mean candidate target."""

    cfg: CRDPLLConfig
    targets: Tensor

    def __init__(self, cfg: CRDPLLConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.register_buffer("targets", uniform_over_candidates(data.candidates))

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        cfg = self.cfg
        data, g = ctx.data, ctx.generator
        img = data.images[idx]
        views = [data.augment.weak(img, g)] + [data.augment.strong(img, g) for _ in range(cfg.num_strong)]
        b = len(idx)
        # One forward over all views: train-mode BatchNorm then sees the views together, as one batch.
        logits = self.net(torch.cat(views))[0].float().split(b)
        cand = data.candidates[idx]
        target = self.targets[idx]
        l_sup = non_candidate_loss(F.softmax(logits[0], dim=1), cand)
        l_cons = sum((consistency_loss(z, target) for z in logits), logits[0].new_zeros(()))
        t = ctx.epoch + ctx.batch_index / max(1, ctx.num_batches)
        lam = cfg.lam * min(t / cfg.ramp_epochs, 1.0)
        loss = l_sup + lam * l_cons
        with torch.no_grad():
            self.targets[idx] = geometric_target([F.softmax(z.detach(), dim=1) for z in logits], cand)
        return StepOutput(losses={"loss": loss}, report={"loss_sup": l_sup.detach(), "loss_cons": l_cons.detach(),
                                                         "cons_weight": lam})
