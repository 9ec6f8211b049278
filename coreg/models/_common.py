"""Helpers shared by the model files (private)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SETTINGS = ("32x32", "64x64")


def check_common(*, num_classes: int, in_channels: int, setting: str, width: float, proj_dim: int) -> None:
    """Validate the constructor arguments every student network shares.

    Raises:
        ValueError: any argument out of range.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if proj_dim < 1:
        raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")


def scaled(channels: int, width: float, *, minimum: int = 8) -> int:
    """``round(channels * width)``, at least ``minimum``."""
    return max(minimum, int(round(channels * width)))


class Heads(nn.Module):
    """Classifier and projection head on a pooled feature (spec 4.2).

    Classifier: ``Linear(D -> K)``. Projection: ``Linear(D -> D) -> ReLU -> Linear(D -> proj_dim)``
    then L2 normalisation (eps 1e-12). The projection is computed in float32 even under
    autocast: its unit norm feeds temperature-scaled similarities (/0.07, /0.3), where bf16
    rounding of the norm (~0.4%) would be amplified.
    """

    def __init__(self, feature_dim: int, num_classes: int, proj_dim: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(feature_dim, num_classes)
        self.head = nn.Sequential(
            nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, proj_dim)
        )

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Map features ``[B, D]`` to ``(logits [B, K], z [B, proj_dim])``."""
        logits = self.classifier(h)
        z = self.head(h)
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        return logits, F.normalize(z, dim=1, eps=1e-12)
