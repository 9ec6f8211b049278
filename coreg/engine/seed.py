"""Seeded generators: every random draw comes from generators derived from (seed, epoch)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived deterministically from ``parts`` (stable across processes)."""
    h = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def epoch_generators(seed: int, epoch: int) -> tuple[torch.Generator, np.random.Generator]:
    """The torch (CPU) and numpy generators of one epoch.

    Deriving them from ``(seed, epoch)`` makes a run resumed at an epoch boundary draw exactly
    the numbers an uninterrupted run draws.
    """
    s = derive_seed(seed, "epoch", epoch)
    return torch.Generator().manual_seed(s), np.random.default_rng(s)
