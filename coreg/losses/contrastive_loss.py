"""Noise-tolerant supervised contrastive loss over a MoCo bank (spec 3.8).

Bank layout (``2B + Q`` rows): ``[q; k; queue]`` with anchor ``i``'s own key at row ``B + i``.
Each row has a hard label (argmax of its soft pseudo-label) and a flag (1 = from the confident
split P, 0 = from U). With ``a_ij = <q_i, bank_j> / T`` and, for anchor ``i``, a positive set
``Pos(i)``, an ignored set ``Ign(i)`` and a denominator ``Den(i)`` = every row except ``i`` itself
that is not ignored::

    l_i = -(1 / |Pos(i)|) sum_{p in Pos(i)} [a_ip - log sum_{j in Den(i)} exp(a_ij)]
    L   = (T / T_base) * mean_i (weight_i * l_i)

Modes (``--cont_mode`` of the reference):

* ``"modified"`` (default): ``Pos = {own key} + {j != i : same label, m_i = m_j = 1}``;
  ``Ign = {same label, m_j = 0}`` for a P anchor, ``{j != own key : same label}`` for a U anchor.
* ``"supcon"``: ``Pos = {j != i : same label}``, nothing ignored.
* ``"hcp"``: positives as ``"modified"``, nothing ignored.
* ``"hcpn"``: positives as ``"modified"``; a P anchor ignores every U row; ``weight_i = m_i``
  (U anchors contribute 0 but count in the mean).
* ``"unsupcon"``: MoCo InfoNCE, logits ``[<q_i, k_i>, <q_i, queue>] / T``, CE towards index 0.

The sets are built as boolean masks in one shot (the reference uses per-row Python loops). The
own key is never ignored, whatever the flags say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoiseTolerantContrastiveLoss", "CONTRASTIVE_MODES"]

CONTRASTIVE_MODES = ("modified", "supcon", "hcp", "hcpn", "unsupcon")


class NoiseTolerantContrastiveLoss(nn.Module):
    """Contrastive loss with the Co-Reg positive/ignored sets.

    Args:
        mode: one of ``CONTRASTIVE_MODES``.
        temperature: T (0.07).
        base_temperature: T_base (0.07); the loss is scaled by ``T / T_base``.

    Raises:
        ValueError: unknown mode or non-positive temperatures.
    """

    def __init__(self, mode: str = "modified", temperature: float = 0.07, base_temperature: float = 0.07) -> None:
        super().__init__()
        if mode not in CONTRASTIVE_MODES:
            raise ValueError(f"unknown contrastive mode {mode!r}; valid modes: {list(CONTRASTIVE_MODES)}")
        if temperature <= 0 or base_temperature <= 0:
            raise ValueError(f"temperatures must be > 0, got {temperature}, {base_temperature}")
        self.mode = mode
        self.temperature = temperature
        self.base_temperature = base_temperature

    def masks(
        self, bank_labels: torch.Tensor, bank_flags: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Positive, denominator and per-anchor weight for the set-based modes.

        Args:
            bank_labels: hard labels ``[N]`` (long), ``N = 2B + Q``.
            bank_flags: membership flags ``[N]`` (1 = P).
            batch_size: B.

        Returns:
            ``(pos [B, N] bool, den [B, N] bool, weight [B] float)``.
        """
        b = batch_size
        n = bank_labels.shape[0]
        device = bank_labels.device
        rows = torch.arange(b, device=device).unsqueeze(1)
        cols = torch.arange(n, device=device).unsqueeze(0)
        is_self = cols == rows
        is_own = cols == rows + b
        flags = _as_bool(bank_flags)
        fa = flags[:b].unsqueeze(1)  # anchor is from P
        fb = flags.unsqueeze(0)  # bank row is from P
        same = bank_labels[:b].unsqueeze(1) == bank_labels.unsqueeze(0)
        none = torch.zeros_like(same)
        weight = torch.ones(b, device=device)
        if self.mode == "supcon":
            pos, ign = same & ~is_self, none
        else:
            pos = is_own | (same & fa & fb & ~is_self)
            if self.mode == "modified":
                ign = torch.where(fa, same & ~fb, same & ~is_own)
            elif self.mode == "hcp":
                ign = none
            else:  # hcpn
                ign = fa & ~fb
                weight = flags[:b].float()
        ign = ign & ~is_own
        den = ~is_self & ~ign
        return pos, den, weight

    def forward(
        self,
        q: torch.Tensor,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        bank_flags: torch.Tensor,
        batch_size: int,
    ) -> torch.Tensor:
        """Compute the loss in float32.

        Args:
            q: anchor projections ``[B, D]`` (unit norm).
            bank: ``[q; k; queue]`` features ``[2B + Q, D]``; gradients flow through whatever
                rows the caller left attached (normally the first B).
            bank_labels: hard labels ``[2B + Q]`` (long).
            bank_flags: flags ``[2B + Q]`` (bool or float; 1 = from P).
            batch_size: B.

        Returns:
            Scalar loss.

        Raises:
            ValueError: inconsistent shapes.
        """
        b = batch_size
        if q.dim() != 2 or bank.dim() != 2 or q.shape[0] != b or bank.shape[1] != q.shape[1]:
            raise ValueError(f"q must be [B={b}, D] and bank [N, D], got {tuple(q.shape)}, {tuple(bank.shape)}")
        n = bank.shape[0]
        if n < 2 * b:
            raise ValueError(f"bank needs at least 2B = {2 * b} rows ([q; k; queue]), got {n}")
        if tuple(bank_labels.shape) != (n,) or tuple(bank_flags.shape) != (n,):
            raise ValueError(f"bank_labels and bank_flags must be [{n}], got {tuple(bank_labels.shape)}, "
                             f"{tuple(bank_flags.shape)}")
        if bank_labels.dtype.is_floating_point or bank_labels.dtype == torch.bool:
            raise ValueError(f"bank_labels must be integer hard labels, got {bank_labels.dtype}")
        scale = self.temperature / self.base_temperature
        # Similarities divided by 0.07 must stay float32: autocast would run the matmul in bf16.
        with torch.autocast(q.device.type, enabled=False):
            q32, bank32 = q.float(), bank.float()
            if self.mode == "unsupcon":
                l_pos = (q32 * bank32[b:2 * b]).sum(dim=1, keepdim=True)
                l_neg = q32 @ bank32[2 * b:].t()
                logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
                target = torch.zeros(b, dtype=torch.long, device=q.device)
                return scale * F.cross_entropy(logits, target)
            sim = q32 @ bank32.t() / self.temperature
        pos, den, weight = self.masks(bank_labels, bank_flags, b)
        log_norm = torch.logsumexp(sim.masked_fill(~den, float("-inf")), dim=1, keepdim=True)
        posf = pos.float()
        mean_log_prob_pos = (posf * (sim - log_norm)).sum(dim=1) / posf.sum(dim=1).clamp(min=1.0)
        return -scale * (weight * mean_log_prob_pos).mean()


def _as_bool(flags: torch.Tensor) -> torch.Tensor:
    return flags if flags.dtype == torch.bool else flags > 0.5
