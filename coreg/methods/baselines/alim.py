"""``alim``: adjusting label importance for noisy partial label learning.

Xu, Lian, Feng, Liu and Tao, "ALIM: Adjusting Label Importance Mechanism for Noisy Partial Label
Learning", NeurIPS 2023. ALIM is a plug-in on a PLL base: instead of trusting the candidate set
fully, the pseudo-label trades off the set Y and the model prediction p with a coefficient
lambda in [0, 1]::

    a_i = (Y_i + lambda (1 - Y_i)) * p_i          (candidates weigh 1, non-candidates lambda)
    onehot variant:  w_i = onehot(argmax_j a_ij)
    scale variant:   w_i = a_i^(1/tau) / sum_j a_ij^(1/tau)

``lambda = 0`` recovers the base PLL disambiguation and ``lambda = 1`` ignores the candidates.

**Base (a documented choice):** the PRODEN-style base (:mod:`.proden`): one network, per-sample
targets ``w`` (buffer ``targets [N, K]``, uniform on Y at first), loss ``-sum_j w_ij log p_ij`` on a
weak view, targets re-identified from each step's detached predictions. The paper's main base is
PiCO; the PRODEN base keeps the mechanism the same at a third of the cost. During the engine's
warm-up epochs (``epoch < ctx.warmup``) lambda is 0 (plain PLL), as ALIM starts adjusting after a
warm-up.

**lambda:** ``lambda_mode="fixed"`` uses ``lam``. ``"adaptive"`` estimates it at the start of each
post-warm-up epoch from the last predictions of every sample (buffer ``memory``) and the noise
level ``noise_rate`` (eta): a row moves its top label out of Y iff
``lambda * max_{j not in Y} p_j > max_{j in Y} p_j``, so lambda is set to make a fraction eta of the
rows do so: ``lambda = 1 / quantile_{1 - eta}(max_{not Y} p / max_{Y} p)``, clipped to [0, 1].

**Mixup (optional, ``mixup_weight > 0``):** the paper adds mixup for noise tolerance: a second
loss on ``lam x_a + (1 - lam) x_b`` against ``lam w_a + (1 - lam) w_b``, ``lam ~ Beta(alpha, alpha)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from coreg.config import check
from coreg.methods.base import EpochContext, EpochPlan, StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import (
    SingleNetConfig,
    SingleNetMethod,
    restrict,
    uniform_over_candidates,
)
from coreg.methods.baselines.proden import weighted_ce
from coreg.methods.registry import register_method

__all__ = ["ALIMConfig", "ALIM", "adjusted_targets", "estimate_lambda"]

VARIANTS = ("onehot", "scale")
LAMBDA_MODES = ("fixed", "adaptive")


@dataclass(frozen=True)
class ALIMConfig(SingleNetConfig):
    """ALIM settings.

    Attributes:
        variant: ``onehot`` or ``scale``.
        lambda_mode: ``fixed`` (use ``lam``) or ``adaptive`` (estimate from ``noise_rate``).
        lam: the fixed lambda.
        noise_rate: eta, the assumed share of rows whose set misses the true label (adaptive mode).
        tau: sharpening temperature of the scale variant (1 = plain normalisation).
        mixup_weight: weight of the mixup loss (0 = off).
        mixup_alpha: Beta(alpha, alpha) of the mixup coefficient.
    """

    variant: str = "onehot"
    lambda_mode: str = "adaptive"
    lam: float = 0.3
    noise_rate: float = 0.2
    tau: float = 1.0
    mixup_weight: float = 1.0
    mixup_alpha: float = 1.0

    def validate(self) -> None:
        super().validate()
        check(self.variant in VARIANTS, f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        check(self.lambda_mode in LAMBDA_MODES, f"lambda_mode must be one of {list(LAMBDA_MODES)}, "
                                                f"got {self.lambda_mode!r}")
        check(0.0 <= self.lam <= 1.0, f"lam must be in [0, 1], got {self.lam}")
        check(0.0 <= self.noise_rate < 1.0, f"noise_rate must be in [0, 1), got {self.noise_rate}")
        check(self.tau > 0, f"tau must be > 0, got {self.tau}")
        check(self.mixup_weight >= 0, f"mixup_weight must be >= 0, got {self.mixup_weight}")
        check(self.mixup_alpha > 0, f"mixup_alpha must be > 0, got {self.mixup_alpha}")


def adjusted_targets(probs: Tensor, candidates: Tensor, *, lam: float, variant: str = "onehot",
                     tau: float = 1.0) -> Tensor:
    """ALIM's pseudo-labels from ``a = (Y + lam (1 - Y)) * p``.

    Args:
        probs: predictions ``[B, K]``.
        candidates: 0/1 ``[B, K]``.
        lam: lambda in [0, 1].
        variant: ``onehot`` (one-hot of argmax a) or ``scale`` (a^(1/tau) normalised).
        tau: temperature of the scale variant.

    Returns:
        ``[B, K]`` rows summing to 1.

    Raises:
        ValueError: unknown variant.
    """
    y = (candidates > 0).to(probs.dtype)
    a = (y + lam * (1 - y)) * probs
    if variant == "onehot":
        return F.one_hot(a.argmax(1), probs.shape[1]).to(probs.dtype)
    if variant == "scale":
        if lam == 0.0:
            a = a + 1e-12 * y  # keep a row with no candidate mass supported on its candidates
        a = a.clamp_min(0.0).pow(1.0 / tau)
        return a / a.sum(1, keepdim=True).clamp_min(1e-12)
    raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")


def estimate_lambda(probs: Tensor, candidates: Tensor, *, noise_rate: float) -> float:
    """Adaptive lambda: a fraction ``noise_rate`` of rows gets its top label outside Y.

    Args:
        probs: recent predictions of every sample ``[N, K]``.
        candidates: 0/1 ``[N, K]``.
        noise_rate: eta in [0, 1).

    Returns:
        ``1 / quantile_{1 - eta}(max_{not Y} p / max_{Y} p)`` clipped to [0, 1] (0 when eta = 0
        or no row has a non-candidate).
    """
    y = candidates > 0
    partial = ~y.all(1)
    if noise_rate <= 0 or not bool(partial.any()):
        return 0.0
    p = probs.float()[partial]
    yy = y[partial]
    top_in = p.masked_fill(~yy, 0.0).amax(1).clamp_min(1e-12)
    top_out = p.masked_fill(yy, 0.0).amax(1)
    ratio = (top_out / top_in).cpu().numpy().astype(np.float64)
    q = float(np.quantile(ratio, 1.0 - noise_rate))
    if q <= 0:
        return 1.0
    return float(min(1.0, max(0.0, 1.0 / q)))


@register_method("alim", config=ALIMConfig)
class ALIM(SingleNetMethod):
    """PRODEN-style base with ALIM's adjusted label importance (see the module docstring)."""

    cfg: ALIMConfig
    targets: Tensor
    memory: Tensor
    lam: Tensor

    def __init__(self, cfg: ALIMConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        k = data.num_classes
        self.register_buffer("targets", uniform_over_candidates(data.candidates))
        self.register_buffer("memory", torch.full((data.num_samples, k), 1.0 / k))
        self.register_buffer("lam", torch.zeros(()))  # lambda in use this epoch (checkpointed)

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        plan = super().on_epoch_start(ctx)
        if ctx.epoch < ctx.warmup:
            lam = 0.0
        elif self.cfg.lambda_mode == "fixed":
            lam = self.cfg.lam
        else:
            lam = estimate_lambda(self.memory, ctx.data.candidates, noise_rate=self.cfg.noise_rate)
        self.lam.fill_(lam)
        plan.report["alim_lambda"] = lam
        return plan

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        cfg = self.cfg
        data, g = ctx.data, ctx.generator
        x = data.augment.weak(data.images[idx], g)
        cand = data.candidates[idx]
        target = self.targets[idx]
        logits = self.net(x)[0].float()
        l_cls = weighted_ce(logits, target)
        loss = l_cls
        report: dict[str, Any] = {"loss_cls": l_cls.detach()}
        if cfg.mixup_weight > 0:
            mix = float(ctx.rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
            perm = torch.randperm(len(idx), generator=g, device=g.device).to(x.device)
            logits_m = self.net(mix * x + (1 - mix) * x[perm])[0].float()
            l_mix = weighted_ce(logits_m, mix * target + (1 - mix) * target[perm])
            loss = loss + cfg.mixup_weight * l_mix
            report["loss_mix"] = l_mix.detach()
        with torch.no_grad():
            p = F.softmax(logits.detach(), dim=1)
            self.memory[idx] = p
            lam = float(self.lam)
            if ctx.epoch < ctx.warmup:
                self.targets[idx] = restrict(p, cand)
            else:
                self.targets[idx] = adjusted_targets(p, cand, lam=lam, variant=cfg.variant, tau=cfg.tau)
        return StepOutput(losses={"loss": loss}, report=report)
