"""MoCo key queue with soft labels and P/U flags (spec 3.8, 4.3).

Deliberate deviation from the reference: the queue starts as zeros (keys, labels and flags), not
as Gaussian noise normalised along the wrong axis. The reference's junk is fully overwritten long
before the contrastive loss is switched on, so results are unaffected; zeros are reproducible and
harmless (a zero key has similarity 0 with every anchor).

Any batch size works, including one that does not divide the queue size (writes wrap around) and
one larger than the queue (only the last ``size`` rows are kept, as sequential writes would).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LabeledQueue"]


class LabeledQueue(nn.Module):
    """FIFO ring buffer of ``(key, soft label, flag)`` rows.

    Args:
        size: Q, number of rows (8192 in the paper).
        dim: D, key dimension.
        num_classes: K, label dimension.

    Attributes:
        keys: ``[Q, D]`` buffer.
        labels: ``[Q, K]`` buffer (soft pseudo-labels).
        flags: ``[Q]`` float buffer (1 = from P, 0 = from U).
        ptr: long scalar buffer, the next write position.

    Raises:
        ValueError: non-positive sizes.
    """

    keys: torch.Tensor
    labels: torch.Tensor
    flags: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int, dim: int, num_classes: int) -> None:
        super().__init__()
        if size < 1 or dim < 1 or num_classes < 1:
            raise ValueError(f"size, dim and num_classes must be >= 1, got {size}, {dim}, {num_classes}")
        self.size = size
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.zeros(size, num_classes))
        self.register_buffer("flags", torch.zeros(size))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor, flags: torch.Tensor) -> None:
        """Write a batch at ``ptr, ..., ptr + B - 1`` (mod Q); ``ptr <- (ptr + B) mod Q``.

        Pure tensor arithmetic on ``ptr`` (no host synchronisation).

        Args:
            keys: ``[B, D]``.
            labels: ``[B, K]``.
            flags: ``[B]`` (bool or float).

        Raises:
            ValueError: shapes disagree with the queue or with each other.
        """
        b = keys.shape[0]
        if keys.dim() != 2 or keys.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys must be [B, {self.keys.shape[1]}], got {tuple(keys.shape)}")
        if tuple(labels.shape) != (b, self.labels.shape[1]):
            raise ValueError(f"labels must be [{b}, {self.labels.shape[1]}], got {tuple(labels.shape)}")
        if tuple(flags.shape) != (b,):
            raise ValueError(f"flags must be [{b}], got {tuple(flags.shape)}")
        q = self.size
        skip = max(0, b - q)  # rows that later rows of the same batch would overwrite
        pos = (self.ptr + skip + torch.arange(b - skip, device=self.ptr.device)) % q
        self.keys[pos] = keys[skip:].detach().to(self.keys.dtype)
        self.labels[pos] = labels[skip:].detach().to(self.labels.dtype)
        self.flags[pos] = flags[skip:].detach().to(self.flags.dtype)
        self.ptr.copy_((self.ptr + b) % q)

    def contents(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Clones of ``(keys [Q, D], labels [Q, K], flags [Q])``, safe to use after an enqueue."""
        return self.keys.clone(), self.labels.clone(), self.flags.clone()
