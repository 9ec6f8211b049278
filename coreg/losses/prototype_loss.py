"""Prototype-similarity loss (spec 3.7).

``s = softmax(z O^T / tau)`` with the prototypes O treated as constants. Labelled rows:
``lam KL(T_a || s) + (1 - lam) KL(T_b || s)`` (KL summed over classes, averaged over rows,
0 log 0 = 0). Unlabelled rows: ``lam mean((s - T_a)^2) + (1 - lam) mean((s - T_b)^2)`` over rows
and classes. ``L = L_x + lambda_u L_u`` (no ramp). The lambda-weighted pair has the same gradient
as the loss against the mixed target ``lam T_a + (1 - lam) T_b``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["prototype_loss"]


def _kl_rows(target: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    # sum_j T log T - T log s, with 0 log 0 = 0; averaged over rows ("batchmean").
    return (torch.special.xlogy(target, target) - target * log_s).sum(dim=1).mean()


def prototype_loss(
    z: torch.Tensor,
    prototypes: torch.Tensor,
    targets_a: torch.Tensor,
    targets_b: torch.Tensor,
    *,
    lam: float,
    num_labelled: int,
    lambda_u: float = 1.0,
    tau: float = 0.3,
) -> torch.Tensor:
    """Compute the prototype loss in float32.

    Args:
        z: projections of the mixed batch ``[M, D]`` (unit norm).
        prototypes: class prototypes O ``[K, D]`` (detached inside).
        targets_a: unpermuted targets ``[M, K]``.
        targets_b: permuted targets ``targets[perm]`` ``[M, K]``.
        lam: mixup coefficient.
        num_labelled: number of leading labelled rows (``2 B_x``).
        lambda_u: weight of the unlabelled term.
        tau: similarity temperature.

    Returns:
        Scalar loss (a term without rows is 0).

    Raises:
        ValueError: shape mismatch, ``num_labelled`` out of range or ``tau <= 0``.
    """
    if z.dim() != 2 or prototypes.dim() != 2 or z.shape[1] != prototypes.shape[1]:
        raise ValueError(f"z [M, D] and prototypes [K, D] disagree: {tuple(z.shape)}, {tuple(prototypes.shape)}")
    expected = (z.shape[0], prototypes.shape[0])
    if tuple(targets_a.shape) != expected or tuple(targets_b.shape) != expected:
        raise ValueError(f"targets must be {expected}, got {tuple(targets_a.shape)}, {tuple(targets_b.shape)}")
    m = z.shape[0]
    if not 0 <= num_labelled <= m:
        raise ValueError(f"num_labelled must be in [0, {m}], got {num_labelled}")
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    # Float32 similarities even under autocast (which would run the matmul in bf16).
    with torch.autocast(z.device.type, enabled=False):
        sim = z.float() @ prototypes.detach().float().t() / tau
    ta, tb = targets_a.float(), targets_b.float()
    loss = sim.sum() * 0.0
    n = num_labelled
    if n > 0:
        log_s = F.log_softmax(sim[:n], dim=1)
        loss = loss + lam * _kl_rows(ta[:n], log_s) + (1.0 - lam) * _kl_rows(tb[:n], log_s)
    if n < m:
        s = F.softmax(sim[n:], dim=1)
        lu = lam * (s - ta[n:]).pow(2).mean() + (1.0 - lam) * (s - tb[n:]).pow(2).mean()
        loss = loss + lambda_u * lu
    return loss
