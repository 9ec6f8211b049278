"""Warm-up losses (spec 3.1): partial cross-entropy and the negative-entropy penalty.

The reference computes the partial CE with a per-sample Python loop (one host synchronisation
per sample); here it is one masked reduction, equal to the loop to float rounding.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PartialCELoss", "negative_entropy"]


def _check_2d(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2:
        raise ValueError(f"{name} must be 2-D [B, K], got shape {tuple(t.shape)}")


class PartialCELoss(nn.Module):
    """Partial cross-entropy over candidate sets.

    ``L = mean_{i : S_i != all classes} -log(sum_j Y_ij p_ij + eps)``. Rows whose targets are all
    >= 1 (the set is every class) carry no information; they are excluded from the sum *and* the
    denominator. A batch of only full rows gives 0. Computed in float32 (safe under autocast).

    Args:
        eps: added inside the log (1e-5 in the reference).
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps = eps

    def forward(self, probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Compute the loss.

        Args:
            probs: predicted probabilities ``[B, K]`` (softmax outputs).
            targets: candidate matrix ``[B, K]`` (0/1, bool, or soft weights).

        Returns:
            Scalar loss (0 when every row is full; still attached to ``probs``).

        Raises:
            ValueError: shapes are not both ``[B, K]``.
        """
        _check_2d("probs", probs)
        if targets.shape != probs.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} != probs shape {tuple(probs.shape)}")
        probs = probs.float()
        targets = targets.to(probs.dtype)
        keep = (targets < 1).any(dim=1).to(probs.dtype)  # not full
        per_row = -torch.log((targets * probs).sum(dim=1) + self.eps)
        return (per_row * keep).sum() / keep.sum().clamp(min=1.0)


def negative_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean negative entropy ``mean_i sum_j p_ij log p_ij`` (0 log 0 = 0), in ``[-log K, 0]``.

    Args:
        probs: probabilities ``[B, K]``.

    Returns:
        Scalar, computed in float32.

    Raises:
        ValueError: ``probs`` is not 2-D.
    """
    _check_2d("probs", probs)
    probs = probs.float()
    # The log's argument is clamped at the smallest normal float: the same value wherever p > 0,
    # and a finite gradient where softmax underflowed to exactly 0 (``xlogy(p, p)``'s gradient there
    # is 0/0 = NaN; a width-1.0 network at lr 0.1 reached it within its first epoch on digits).
    return torch.special.xlogy(probs, probs.clamp_min(torch.finfo(torch.float32).tiny)).sum(dim=1).mean()
