"""Eval-time wrappers: the two-network logit-sum ensemble (spec 3.10) and a logits-only view.

Both are export-friendly: the loop over networks is over a fixed ``ModuleList`` and nothing
branches on data, so ``torch.export`` / ``torch.onnx.export(dynamo=True)`` trace them directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["LogitSumEnsemble", "LogitsOnly"]


def _logits(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    # Student nets return (logits, z); plain classifiers return logits. Resolved at trace time.
    return out[0] if isinstance(out, (tuple, list)) else out


class LogitSumEnsemble(nn.Module):
    """Sum of the networks' raw logits (not of their probabilities), spec 3.10.

    Args:
        nets: one or more networks, each ``forward(x) -> (logits [B, K], z)`` or ``logits``.

    Raises:
        ValueError: ``nets`` is empty.
    """

    def __init__(self, nets: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(nets) == 0:
            raise ValueError("LogitSumEnsemble needs at least one network")
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` -> summed logits ``[B, K]``."""
        total = _logits(self.nets[0](x))
        for net in self.nets[1:]:
            total = total + _logits(net(x))
        return total


class LogitsOnly(nn.Module):
    """Wrap a student network so ``forward`` returns only its logits ``[B, K]``.

    Args:
        net: network with ``forward(x) -> (logits, z)``.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, C, H, W]`` -> logits ``[B, K]``."""
        return _logits(self.net(x))
