"""``dividemix``: learning with noisy labels as semi-supervised learning, on the annotator's single labels.

Li, Socher and Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised Learning",
ICLR 2020. The labels are ``TrainData.noisy_labels`` (one label per image; a trusted few-shot
row uses its gold label). Two networks, phases ``net1`` and ``net2``:

* **Warm-up** (``epoch < ctx.warmup``): each network alone, cross-entropy on one weak view with
  batch ``2 x batch_size``; optionally plus the negative-entropy confidence penalty
  (``penalty=True``, the paper's choice for asymmetric noise).
* **Co-divide** (every later epoch, both divisions before any training): each network computes
  the per-sample CE of the test view in eval mode; :func:`~coreg.methods.selection.co_divide`
  min-max normalises it (optionally averages ``loss_window`` epochs) and fits a seeded 2-component
  GMM; ``w_i`` = posterior of the low-loss component, labelled set X = ``{w > p_threshold}``.
  Network 1 trains on network 2's division and vice versa.
* **Co-refinement** of labelled targets: ``sharpen(w y + (1 - w) mean_2views p, T)`` with the
  network's own predictions. **Co-guessing** of unlabelled targets: ``sharpen`` of the mean of
  both networks' predictions on two weak views (the peer frozen, in eval mode).
* **MixMatch**: X and U rows (two weak views each) mixed with one permutation and
  ``lam = max(l, 1 - l)``, ``l ~ Beta(alpha, alpha)``; soft CE on the X rows, MSE on the U rows
  weighted by ``lambda_u`` times the linear ramp (16 epochs after warm-up), plus the uniform-prior
  regulariser ``sum_j pi_j log(pi_j / mean_b p_bj)``.

The pure maths (``co_divide``, ``sharpen``, ``sample_mixup``, ``mixup``, ``semi_loss``,
``linear_rampup``) is shared with Co-Reg. Randomness comes only from the epoch generators; the GMM
is seeded from (seed, epoch, network).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coreg.config import check
from coreg.losses import negative_entropy
from coreg.losses.semi_loss import linear_rampup, semi_loss
from coreg.methods.base import (
    EpochContext,
    EpochPlan,
    Method,
    MethodConfig,
    StepContext,
    StepOutput,
    TrainData,
    index_batches,
    labelled_unlabelled_batches,
)
from coreg.methods.registry import register_method
from coreg.methods.selection import co_divide, mixup, sample_mixup, sharpen

__all__ = ["DivideMixConfig", "DivideMix", "uniform_prior_penalty", "training_labels"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DivideMixConfig(MethodConfig):
    """DivideMix hyper-parameters (defaults: the paper's CIFAR ones; ``lambda_u`` its high-noise value)."""

    batch_size: int = 64
    warmup_batch_size: int = 0  # 0 = 2 x batch_size, as the paper
    eval_batch_size: int = 512
    alpha: float = 4.0
    lambda_u: float = 25.0
    ramp_length: int = 16
    p_threshold: float = 0.5
    T: float = 0.5
    loss_window: int = 1
    penalty: bool = False

    def validate(self) -> None:
        check(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")
        check(self.warmup_batch_size == 0 or self.warmup_batch_size >= 2, "warmup_batch_size must be 0 or >= 2")
        check(self.eval_batch_size >= 1, "eval_batch_size must be >= 1")
        check(self.alpha > 0, f"alpha must be > 0, got {self.alpha}")
        check(self.lambda_u >= 0, f"lambda_u must be >= 0, got {self.lambda_u}")
        check(self.ramp_length >= 1, "ramp_length must be >= 1")
        check(0.0 <= self.p_threshold < 1.0, f"p_threshold must be in [0, 1), got {self.p_threshold}")
        check(self.T > 0, f"T must be > 0, got {self.T}")
        check(self.loss_window >= 1, "loss_window must be >= 1")


def uniform_prior_penalty(logits: Tensor) -> Tensor:
    """``sum_j pi_j log(pi_j / mean_b softmax(z_b)_j)`` with a uniform prior pi (float32)."""
    k = logits.shape[1]
    mean_p = F.softmax(logits.float(), dim=1).mean(0)
    prior = torch.full_like(mean_p, 1.0 / k)
    return (prior * (prior.log() - mean_p.clamp_min(1e-12).log())).sum()


def training_labels(data: TrainData) -> Tensor:
    """The single labels DivideMix trains on: the annotator's, or the gold label of a trusted row, ``[N]``."""
    if data.trusted is None:
        return data.noisy_labels
    return torch.where(data.trusted, data.candidates.argmax(1), data.noisy_labels)


def _softmax(logits: Tensor) -> Tensor:
    return F.softmax(logits.float(), dim=1)


@register_method("dividemix", config=DivideMixConfig)
class DivideMix(Method):
    """Two networks, GMM co-divide on the CE loss, MixMatch with co-refinement and co-guessing."""

    cfg: DivideMixConfig

    def __init__(self, cfg: DivideMixConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.net1 = model_factory()
        self.net2 = model_factory()
        self.history: dict[str, list[np.ndarray]] = {"net1": [], "net2": []}
        self._divisions: dict[str, Tensor] = {}

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"net1": self.sgd(self.net1.parameters()), "net2": self.sgd(self.net2.parameters())}

    def eval_nets(self) -> dict[str, nn.Module]:
        return {"net1": self.net1, "net2": self.net2}

    def _pair(self, phase: str) -> tuple[nn.Module, nn.Module]:
        return (self.net1, self.net2) if phase == "net1" else (self.net2, self.net1)

    # ----------------------------------------------------------------- epoch level

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        data = ctx.data
        idx = torch.arange(data.num_samples, device=data.device)
        if ctx.epoch < ctx.warmup:
            bs = self.cfg.warmup_batch_size or 2 * self.cfg.batch_size
            b1 = index_batches(idx, bs, generator=ctx.generator, min_batches=ctx.min_steps)
            b2 = index_batches(idx, bs, generator=ctx.generator, min_batches=ctx.min_steps)
            return EpochPlan(phases={"net1": ({"kind": "warmup", "idx": b} for b in b1),
                                     "net2": ({"kind": "warmup", "idx": b} for b in b2)},
                             lengths={"net1": len(b1), "net2": len(b2)})
        labels = training_labels(data)
        report: dict[str, float] = {}
        for i, name in enumerate(("net1", "net2")):
            net, _ = self._pair(name)
            w = self.divide(net, data, labels, history=self.history[name],
                            seed=ctx.seed * 100_003 + ctx.epoch * 2 + i)
            self._divisions[name] = w
            report.update(self._division_report(name, w, data, labels))
        phases: dict[str, Any] = {}
        lengths: dict[str, int] = {}
        for name in ("net1", "net2"):
            w = self._divisions["net2" if name == "net1" else "net1"]
            lab, unl = labelled_unlabelled_batches(w > self.cfg.p_threshold, self.cfg.batch_size,
                                                   generator=ctx.generator, min_batches=ctx.min_steps)
            lengths[name] = len(lab)
            phases[name] = self._iter(lab, unl, w, labels)
            if not lab:
                logger.warning("epoch %d: the division for %s has an empty labelled set; no update this epoch",
                               ctx.epoch, name)
        return EpochPlan(phases=phases, report=report, lengths=lengths)

    @torch.no_grad()
    def divide(self, net: nn.Module, data: TrainData, labels: Tensor, *, history: list[np.ndarray],
               seed: int) -> Tensor:
        """Per-sample CE of the test view (eval mode) -> clean probabilities ``w [N]``."""
        was = net.training
        net.eval()
        losses = torch.empty(data.num_samples, device=data.device)
        for idx in torch.arange(data.num_samples, device=data.device).split(self.cfg.eval_batch_size):
            logits = net(data.augment.test(data.images[idx]))[0].float()
            losses[idx] = F.cross_entropy(logits, labels[idx], reduction="none")
        net.train(was)
        w_np = co_divide(losses.cpu().numpy(), history, seed=seed, window=self.cfg.loss_window)
        w = torch.from_numpy(w_np).float().to(data.device)
        if data.trusted is not None:
            w = torch.where(data.trusted, torch.ones_like(w), w)
        return w

    @staticmethod
    def _division_report(name: str, w: Tensor, data: TrainData, labels: Tensor) -> dict[str, float]:
        lab = w > 0.5
        out = {f"{name}_num_labelled": float(lab.sum())}
        if data.gold is not None:
            clean = labels == data.gold
            tp = float((lab & clean).sum())
            out[f"{name}_division_precision"] = tp / max(1.0, float(lab.sum()))
            out[f"{name}_division_recall"] = tp / max(1.0, float(clean.sum()))
        return out

    @staticmethod
    def _iter(lab: list[Tensor], unl: list[Tensor], w: Tensor, labels: Tensor) -> Iterator[dict[str, Any]]:
        for xb, ub in zip(lab, unl):
            yield {"kind": "mix", "x_idx": xb, "u_idx": ub, "w": w[xb], "y": labels[xb]}

    # ----------------------------------------------------------------- steps

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        if batch["kind"] == "warmup":
            return self._warmup_step(batch["idx"], ctx)
        return self._mix_step(batch, ctx)

    def _warmup_step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        net, peer = self._pair(ctx.phase)
        net.train()
        peer.eval()
        data = ctx.data
        logits = net(data.augment.weak(data.images[idx], ctx.generator))[0].float()
        l_ce = F.cross_entropy(logits, training_labels(data)[idx])
        loss = l_ce
        report: dict[str, Any] = {"warmup_ce": l_ce.detach()}
        if self.cfg.penalty:
            l_ne = negative_entropy(F.softmax(logits, dim=1))
            loss = loss + l_ne
            report["warmup_neg_entropy"] = l_ne.detach()
        return StepOutput(losses={"loss": loss}, report=report)

    def _mix_step(self, batch: dict[str, Any], ctx: StepContext) -> StepOutput:
        cfg = self.cfg
        net, peer = self._pair(ctx.phase)
        net.train()
        peer.eval()
        data, g = ctx.data, ctx.generator
        xi, ui = batch["x_idx"], batch["u_idx"]
        bx, bu = len(xi), len(ui)
        k = self.num_classes
        x_img = data.images[xi]
        x1, x2 = data.augment.weak(x_img, g), data.augment.weak(x_img, g)
        if bu:
            u_img = data.images[ui]
            u1, u2 = data.augment.weak(u_img, g), data.augment.weak(u_img, g)
        with torch.no_grad():
            if bu:
                pu = _softmax(net(torch.cat([u1, u2]))[0]) + _softmax(peer(torch.cat([u1, u2]))[0])
                t_u = sharpen((pu[:bu] + pu[bu:]) / 4, cfg.T)
            else:
                t_u = torch.empty(0, k, device=x_img.device)
            px = _softmax(net(torch.cat([x1, x2]))[0])
            w = batch["w"][:, None].float()
            y = F.one_hot(batch["y"], k).float()
            t_x = sharpen(w * y + (1 - w) * (px[:bx] + px[bx:]) / 2, cfg.T)
        inputs = torch.cat([x1, x2] + ([u1, u2] if bu else []))
        targets = torch.cat([t_x, t_x, t_u, t_u])
        lam, perm = sample_mixup(len(inputs), alpha=cfg.alpha, rng=ctx.rng, generator=g)
        mixed_x, mixed_t = mixup(inputs, targets, lam=lam, perm=perm.to(inputs.device))
        logits = net(mixed_x)[0].float()
        l_x, l_u = semi_loss(logits, mixed_t, 2 * bx)
        ramp = linear_rampup(ctx.epoch + ctx.batch_index / max(1, ctx.num_batches), ctx.warmup, cfg.ramp_length)
        l_prior = uniform_prior_penalty(logits)
        loss = l_x + cfg.lambda_u * ramp * l_u + l_prior
        return StepOutput(losses={"loss": loss}, report={"loss_x": l_x.detach(), "loss_u": l_u.detach(),
                                                         "loss_prior": l_prior.detach(), "ramp": ramp,
                                                         "mixup_lam": lam})

    # ----------------------------------------------------------------- state

    def extra_state(self) -> dict[str, Any]:
        return {"history": {k: [torch.from_numpy(np.asarray(v)) for v in h] for k, h in self.history.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        hist = state.get("history", {})
        self.history = {k: [t.numpy().astype(np.float64) for t in v] for k, v in hist.items()} or {"net1": [], "net2": []}
