"""Shared plumbing of the one-network baselines (private helper).

:class:`SingleNetMethod` holds one network ``net``, one optimiser under the phase ``"main"``, and
an epoch plan of shuffled index batches over the whole training set. Subclasses implement
:meth:`SingleNetMethod.step`. Some papers (RC, LWS) re-estimate per-sample confidences with a
*fresh* forward pass of the *updated* model after each optimiser step; the engine steps the
optimiser after :meth:`Method.training_step` returns, so such updates are deferred with
:meth:`SingleNetMethod.defer` and applied at the start of the next step and at the end of the
epoch (before the engine checkpoints), see :meth:`SingleNetMethod.flush`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coreg.config import check
from coreg.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    MethodConfig,
    StepContext,
    StepOutput,
    TrainData,
    index_batches,
)

__all__ = ["SingleNetConfig", "SingleNetMethod", "softmax32", "restrict", "uniform_over_candidates"]

PHASE = "main"


@dataclass(frozen=True)
class SingleNetConfig(MethodConfig):
    """Settings shared by the one-network baselines."""

    batch_size: int = 256

    def validate(self) -> None:
        check(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")


def softmax32(logits: Tensor) -> Tensor:
    """Float32 softmax over classes (safe under bf16 autocast)."""
    return F.softmax(logits.float(), dim=1)


def restrict(probs: Tensor, candidates: Tensor, *, eps: float = 1e-12) -> Tensor:
    """``probs * Y`` renormalised over each row's candidates; rows with no mass become uniform on Y.

    Args:
        probs: probabilities ``[B, K]``.
        candidates: 0/1 candidate matrix ``[B, K]``.
        eps: floor of the row mass.

    Returns:
        ``[B, K]`` distributions supported on the candidates (rows sum to 1).
    """
    y = candidates.to(probs.dtype)
    w = probs * y
    mass = w.sum(1, keepdim=True)
    uniform = y / y.sum(1, keepdim=True).clamp_min(1.0)
    return torch.where(mass > eps, w / mass.clamp_min(eps), uniform)


def uniform_over_candidates(candidates: Tensor) -> Tensor:
    """``Y / |S|`` row-wise: the usual initial confidence of PLL methods, ``[N, K]``."""
    y = candidates.float()
    return y / y.sum(1, keepdim=True).clamp_min(1.0)


class SingleNetMethod(Method):
    """One network, one optimiser (phase ``"main"``), shuffled batches over all training images.

    Args:
        cfg: the method's config (a :class:`SingleNetConfig`).
        data: training data.
        model_factory: creates the network.
        optim: engine optimiser settings.
    """

    cfg: SingleNetConfig

    def __init__(self, cfg: SingleNetConfig, *, data: TrainData, model_factory: Callable[[], nn.Module],
                 optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.net = model_factory()
        self._pending: tuple[Tensor, Tensor, Tensor] | None = None  # (idx, view, candidates) of a deferred update

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {PHASE: self.sgd(self.net.parameters())}

    def eval_nets(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        self.flush()
        idx = torch.arange(ctx.data.num_samples, device=ctx.data.device)
        batches = index_batches(idx, self.cfg.batch_size, generator=ctx.generator, min_batches=ctx.min_steps)
        return EpochPlan(phases={PHASE: batches}, lengths={PHASE: len(batches)})

    def training_step(self, batch: Any, ctx: StepContext) -> StepOutput:
        self.flush()
        self.net.train()
        return self.step(batch, ctx)

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        """The method's per-batch maths on dataset indices ``idx [B]``."""
        raise NotImplementedError

    def on_epoch_end(self, ctx: EpochContext) -> dict[str, float]:
        self.flush()
        return {}

    # ----------------------------------------------------------------- deferred post-step updates

    def defer(self, idx: Tensor, view: Tensor, candidates: Tensor) -> None:
        """Schedule :meth:`post_step_update` on this batch for after the optimiser step."""
        self._pending = (idx, view.detach(), candidates)

    @torch.no_grad()
    def flush(self) -> None:
        """Run the deferred update (if any) with the current, already-stepped network."""
        if self._pending is None:
            return
        idx, view, cand = self._pending
        self._pending = None
        # Train mode, as the training forward: batch statistics, like the papers' update passes.
        probs = softmax32(self.net(view)[0])
        self.post_step_update(idx, probs, cand)

    def post_step_update(self, idx: Tensor, probs: Tensor, candidates: Tensor) -> None:
        """Per-sample state update from the updated model's ``probs [B, K]`` (RC, LWS)."""
