"""The reference's cosine learning-rate schedule (spec 3.9)."""

from __future__ import annotations

import math


def cosine_lr(epoch: int, *, base_lr: float, period: int = 800, decay_rate: float = 0.1) -> float:
    """``eta_min + (base - eta_min) (1 + cos(pi e / period)) / 2`` with ``eta_min = base * decay_rate**3``.

    Set at the start of every epoch, warm-up included; the period is fixed (800 in the reference),
    so short runs barely decay.
    """
    eta_min = base_lr * decay_rate**3
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / period)) / 2
