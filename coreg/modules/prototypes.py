"""Shared class prototypes with an EMA update (spec 3.7).

The reference updates one sample at a time: ``O_c <- g O_c + (1 - g) z`` for each labelled
sample in batch order, then L2-normalises every row. For a class c hit by ``n_c`` samples
``z_1..z_{n_c}`` this equals the closed form::

    O_c <- normalise(g^{n_c} O_c + (1 - g) sum_k g^{n_c - k} z_k)

which is computed here with one ``index_add_`` (equal to the loop up to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PrototypeModule"]


class PrototypeModule(nn.Module):
    """Holder of the prototype matrix O, shared by both networks.

    Args:
        num_classes: K.
        dim: D, the projection dimension.
        momentum: gamma (0.999).

    Attributes:
        prototypes: ``[K, D]`` buffer, zeros initially; touched rows have unit norm.

    Raises:
        ValueError: invalid sizes or momentum outside [0, 1].
    """

    prototypes: torch.Tensor

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.999) -> None:
        super().__init__()
        if num_classes < 1 or dim < 1:
            raise ValueError(f"num_classes and dim must be >= 1, got {num_classes}, {dim}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("prototypes", torch.zeros(num_classes, dim))

    @torch.no_grad()
    def update(self, z: torch.Tensor, labels: torch.Tensor) -> None:
        """EMA update with a batch, then L2-normalise every row (zero rows stay zero).

        Args:
            z: projections ``[B, D]`` (weak view 1 of the labelled samples).
            labels: hard labels ``[B]`` (long), ``argmax`` of the P targets.

        Raises:
            ValueError: shapes disagree with the prototypes.
        """
        k, d = self.prototypes.shape
        if z.dim() != 2 or z.shape[1] != d:
            raise ValueError(f"z must be [B, {d}], got {tuple(z.shape)}")
        if tuple(labels.shape) != (z.shape[0],):
            raise ValueError(f"labels must be [{z.shape[0]}], got {tuple(labels.shape)}")
        dtype = self.prototypes.dtype
        labels = labels.long()
        g = self.momentum
        onehot = F.one_hot(labels, k).to(dtype)  # [B, K]
        counts = onehot.sum(dim=0)  # n_c
        rank = (onehot.cumsum(dim=0) * onehot).sum(dim=1)  # 1-based position within its class
        weight = (1.0 - g) * torch.pow(torch.full_like(rank, g), counts[labels] - rank)
        agg = torch.zeros_like(self.prototypes).index_add_(0, labels, weight.unsqueeze(1) * z.detach().to(dtype))
        decay = torch.pow(torch.full_like(counts, g), counts).unsqueeze(1)
        self.prototypes.copy_(F.normalize(decay * self.prototypes + agg, dim=1))
