"""Key-encoder (EMA) updates with fused multi-tensor ops (spec 3.8, 4.3).

Only parameters are averaged or copied; buffers (BatchNorm running statistics) are not, as in
the reference (the key encoder always runs in train mode, so its running stats are never used).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["update_momentum", "copy_parameters"]


def _paired(src: nn.Module, dst: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    a: list[torch.Tensor] = list(src.parameters())
    b: list[torch.Tensor] = list(dst.parameters())
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError("the two modules must have the same parameter shapes in the same order")
    return a, b


@torch.no_grad()
def update_momentum(model: nn.Module, ema: nn.Module, m: float) -> None:
    """``theta_ema <- m theta_ema + (1 - m) theta_model`` for every parameter, in place.

    Args:
        model: the trained (query) module.
        ema: the momentum (key) module, same architecture.
        m: momentum in [0, 1]; 1 leaves ``ema`` unchanged, 0 copies ``model``.

    Raises:
        ValueError: ``m`` outside [0, 1] or mismatched parameters.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    src, dst = _paired(model, ema)
    if not dst:
        return
    torch._foreach_mul_(dst, m)
    torch._foreach_add_(dst, src, alpha=1.0 - m)


@torch.no_grad()
def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Copy every parameter of ``src`` into ``dst`` (buffers untouched).

    Raises:
        ValueError: mismatched parameters.
    """
    a, b = _paired(src, dst)
    for s, d in zip(a, b):
        d.copy_(s)
