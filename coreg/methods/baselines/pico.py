"""``pico``: contrastive label disambiguation for partial label learning.

Wang, Xiao, Li, Feng, Niu, Chen and Zhao, "PiCO: Contrastive Label Disambiguation for Partial
Label Learning", ICLR 2022. One query network f (classifier + projection head) and a momentum key
encoder; per step a weak view (query) and a strong view (key) of each image:

* **Classifier targets.** A per-sample soft target ``s_i`` (buffer ``targets [N, K]``), uniform on
  S_i at first; ``L_cls = mean_i -sum_j s_ij log f_j(x_i)``.
* **Pseudo-labels for contrast and prototypes.** ``yhat_i = argmax_{j in S_i} f_j(x_i)``
  (the classifier's prediction restricted to the candidates).
* **Contrastive term.** SupCon over ``[q; k; queue]`` (queue of past keys and their pseudo-labels,
  a :class:`~coreg.modules.LabeledQueue`): positives share the pseudo-label. Before label
  disambiguation starts (``epoch < prot_start``) it is the unsupervised MoCo InfoNCE. Temperature
  0.07. ``L = L_cls + lam * L_cont``.
* **Prototype-based label disambiguation.** Class prototypes ``mu_c`` (a
  :class:`~coreg.modules.PrototypeModule`, momentum 0.99) are moved towards the query embeddings
  of their pseudo-label ``yhat``; the target moves towards the one-hot of the closest prototype
  inside the candidate set, computed with the prototypes *before* this batch's update::

      z_i = onehot(argmax_{j in S_i} q_i . mu_j),   s_i <- phi s_i + (1 - phi) z_i

  with ``phi`` decayed linearly from ``phi_start`` (0.95) to ``phi_end`` (0.8) over the run.
* The key encoder is an EMA of the query network (``update_momentum``, m = 0.999), updated before
  the key forward; it has ``requires_grad=False`` and runs in train mode (batch statistics), as a
  MoCo key encoder does. Only the valid (already written) queue rows enter the bank.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coreg.config import check
from coreg.losses import NoiseTolerantContrastiveLoss
from coreg.methods.base import EpochContext, EpochPlan, StepContext, StepOutput, TrainData
from coreg.methods.baselines._single_net import SingleNetConfig, SingleNetMethod, uniform_over_candidates
from coreg.methods.baselines.proden import weighted_ce
from coreg.methods.registry import register_method
from coreg.modules import LabeledQueue, PrototypeModule, update_momentum

__all__ = ["PiCOConfig", "PiCO", "disambiguate", "frozen_copy", "projection_dim"]


@dataclass(frozen=True)
class PiCOConfig(SingleNetConfig):
    """PiCO settings (defaults: the paper's CIFAR ones).

    Attributes:
        lam: weight of the contrastive term (0.5).
        temperature: contrastive temperature (0.07).
        moco_queue: queue size (8192).
        moco_m: key-encoder momentum (0.999).
        proto_m: prototype momentum (0.99).
        phi_start: initial moving-average weight of the targets (0.95).
        phi_end: final moving-average weight of the targets (0.8).
        prot_start: first epoch of label disambiguation and of the supervised contrast (1).
    """

    lam: float = 0.5
    temperature: float = 0.07
    moco_queue: int = 8192
    moco_m: float = 0.999
    proto_m: float = 0.99
    phi_start: float = 0.95
    phi_end: float = 0.8
    prot_start: int = 1

    def validate(self) -> None:
        super().validate()
        check(self.lam >= 0, f"lam must be >= 0, got {self.lam}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        check(self.moco_queue >= 1, f"moco_queue must be >= 1, got {self.moco_queue}")
        check(0.0 <= self.moco_m <= 1.0 and 0.0 <= self.proto_m <= 1.0, "momenta must be in [0, 1]")
        check(0.0 <= self.phi_end <= 1.0 and 0.0 <= self.phi_start <= 1.0, "phi_start/phi_end must be in [0, 1]")
        check(self.prot_start >= 0, f"prot_start must be >= 0, got {self.prot_start}")


def frozen_copy(net: nn.Module) -> nn.Module:
    """A deep copy of ``net`` with ``requires_grad=False`` (a momentum encoder)."""
    key = copy.deepcopy(net)
    for p in key.parameters():
        p.requires_grad_(False)
    return key


@torch.no_grad()
def projection_dim(net: nn.Module, data: TrainData) -> int:
    """Width of the projection ``z`` that ``net`` returns."""
    was = net.training
    net.eval()
    x = torch.zeros(2, data.spec.channels, data.spec.size, data.spec.size, device=next(net.parameters()).device)
    dim = int(net(x)[1].shape[1])
    net.train(was)
    return dim


def disambiguate(targets: Tensor, q: Tensor, prototypes: Tensor, candidates: Tensor, *, phi: float) -> Tensor:
    """PiCO's target update ``phi s + (1 - phi) onehot(argmax_{j in S} q . mu_j)``.

    Args:
        targets: current soft targets ``[B, K]``.
        q: query embeddings ``[B, D]`` (unit norm).
        prototypes: ``[K, D]``.
        candidates: 0/1 ``[B, K]``.
        phi: moving-average weight.

    Returns:
        New targets ``[B, K]``, supported on the candidates when ``targets`` is.
    """
    scores = F.softmax(q.float() @ prototypes.float().t(), dim=1)
    masked = scores.masked_fill(candidates <= 0, -1.0)
    onehot = F.one_hot(masked.argmax(1), targets.shape[1]).to(targets.dtype)
    return phi * targets + (1.0 - phi) * onehot


@register_method("pico", config=PiCOConfig)
class PiCO(SingleNetMethod):
    """Classifier on disambiguated targets + SupCon with a momentum queue (see the module docstring)."""

    uses_run_length = True  # phi ramps over the run's epochs

    cfg: PiCOConfig
    targets: Tensor
    filled: Tensor

    def __init__(self, cfg: PiCOConfig, *, data: TrainData, model_factory: Any, optim: dict[str, float]) -> None:
        super().__init__(cfg, data=data, model_factory=model_factory, optim=optim)
        self.key = frozen_copy(self.net)
        dim = projection_dim(self.net, data)
        k = data.num_classes
        self.queue = LabeledQueue(cfg.moco_queue, dim, k)
        self.prototypes = PrototypeModule(k, dim, momentum=cfg.proto_m)
        self.register_buffer("targets", uniform_over_candidates(data.candidates))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # rows of the queue written so far
        self.supcon = NoiseTolerantContrastiveLoss("supcon", temperature=cfg.temperature,
                                                   base_temperature=cfg.temperature)
        self.moco = NoiseTolerantContrastiveLoss("unsupcon", temperature=cfg.temperature,
                                                 base_temperature=cfg.temperature)
        self._phi = cfg.phi_start

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        frac = ctx.epoch / max(1, ctx.num_epochs - 1)
        self._phi = self.cfg.phi_start - (self.cfg.phi_start - self.cfg.phi_end) * frac
        return super().on_epoch_start(ctx)

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        cfg = self.cfg
        data, g = ctx.data, ctx.generator
        img = data.images[idx]
        cand = data.candidates[idx]
        x_q, x_k = data.augment.weak(img, g), data.augment.strong(img, g)
        logits, q = self.net(x_q)
        logits, q = logits.float(), q.float()
        update_momentum(self.net, self.key, cfg.moco_m)
        with torch.no_grad():
            k_feat = self.key(x_k)[1].float()
            probs = F.softmax(logits.detach(), dim=1)
            yhat = probs.masked_fill(cand <= 0, -1.0).argmax(1)
        b = len(idx)
        n_valid = int(min(int(self.filled), cfg.moco_queue))
        qk, ql = self.queue.keys[:n_valid].clone(), self.queue.labels[:n_valid].clone()
        started = ctx.epoch >= cfg.prot_start
        bank = torch.cat([q, k_feat, qk])
        labels = torch.cat([yhat, yhat, ql.argmax(1)])
        contrast = self.supcon if started else self.moco
        l_cont = contrast(q, bank, labels, torch.ones(len(labels), device=q.device), batch_size=b)
        l_cls = weighted_ce(logits, self.targets[idx])
        loss = l_cls + cfg.lam * l_cont
        with torch.no_grad():
            if started:
                self.targets[idx] = disambiguate(self.targets[idx], q.detach(), self.prototypes.prototypes, cand,
                                                 phi=self._phi)
            self.prototypes.update(q.detach(), yhat)
            self.queue.enqueue(k_feat, F.one_hot(yhat, self.num_classes).float(), torch.ones(b, device=q.device))
            self.filled += b
        return StepOutput(losses={"loss": loss}, report={"loss_cls": l_cls.detach(), "loss_cont": l_cont.detach(),
                                                         "phi": self._phi})
