"""Self-training loss on the mixed batch (spec 3.6) and its linear ramp.

Rows are typed by position: the first ``num_labelled`` rows get a soft cross-entropy, the rest a
squared error averaged over rows *and* classes (the reference divides by K as well).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["linear_rampup", "semi_loss"]


def linear_rampup(current: float, warm_up: int, length: int = 16) -> float:
    """``clip((current - warm_up) / length, 0, 1)``.

    Args:
        current: fractional epoch ``e + b / n_iter``.
        warm_up: W, the number of warm-up epochs.
        length: epochs to reach 1 (16 in the reference).

    Returns:
        The ramp weight in [0, 1].

    Raises:
        ValueError: ``length`` is not positive.
    """
    if length <= 0:
        raise ValueError(f"length must be > 0, got {length}")
    return float(min(max((current - warm_up) / length, 0.0), 1.0))


def semi_loss(logits: torch.Tensor, targets: torch.Tensor, num_labelled: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled soft CE and unlabelled MSE on a mixed batch.

    Args:
        logits: network output ``[M, K]`` on the mixed inputs.
        targets: mixed soft targets ``[M, K]`` (rows sum to 1).
        num_labelled: number of leading rows that are "labelled" (``2 B_x``).

    Returns:
        ``(L_x, L_u)``: ``L_x = -mean_{r < n} sum_j T_rj log softmax(G_r)_j`` and
        ``L_u = mean_{r >= n, j} (softmax(G_r)_j - T_rj)^2``; a term with no rows is 0.
        Both in float32.

    Raises:
        ValueError: shape mismatch or ``num_labelled`` outside ``[0, M]``.
    """
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(f"logits and targets must both be [M, K], got {tuple(logits.shape)}, {tuple(targets.shape)}")
    m = logits.shape[0]
    if not 0 <= num_labelled <= m:
        raise ValueError(f"num_labelled must be in [0, {m}], got {num_labelled}")
    logits = logits.float()
    targets = targets.float()
    zero = logits.sum() * 0.0
    if num_labelled > 0:
        lx = -(targets[:num_labelled] * F.log_softmax(logits[:num_labelled], dim=1)).sum(dim=1).mean()
    else:
        lx = zero
    if num_labelled < m:
        lu = (F.softmax(logits[num_labelled:], dim=1) - targets[num_labelled:]).pow(2).mean()
    else:
        lu = zero
    return lx, lu
