"""A tiny CNN with the student forward contract, for fast unit tests and smoke runs.

Two conv-BN-ReLU layers (the second with stride 2), global average pooling, and the same heads
as :class:`~coreg.models.resnet.PreActResNet18`. A few thousand parameters; any input of at
least 8x8 pixels works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coreg.models._common import Heads, check_common, scaled
from coreg.models.registry import register_model

__all__ = ["TinyCNN"]


@register_model("tiny_cnn")
class TinyCNN(nn.Module):
    """Tiny conv net returning ``(logits, z)``.

    Args:
        num_classes: K.
        in_channels: image channels.
        setting: ``"32x32"`` (first conv stride 1) or ``"64x64"`` (first conv stride 2), for
            parity with the ResNet.
        width: channel multiplier on the 8/16 base widths (at least 4 channels).
        proj_dim: projection dimension.

    Attributes:
        feature_dim: width of the pooled feature (16 for ``width=1``).

    Raises:
        ValueError: invalid arguments.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        setting: str = "32x32",
        width: float = 1.0,
        proj_dim: int = 128,
    ) -> None:
        super().__init__()
        check_common(num_classes=num_classes, in_channels=in_channels, setting=setting, width=width,
                     proj_dim=proj_dim)
        c1, c2 = scaled(8, width, minimum=4), scaled(16, width, minimum=4)
        first_stride = 1 if setting == "32x32" else 2
        self.num_classes = num_classes
        self.feature_dim = c2
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=3, stride=first_stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.heads = Heads(c2, num_classes, proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature: ``[B, C, H, W] -> [B, feature_dim]``."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, H, W]`` -> ``(logits [B, K], z [B, proj_dim])``, z unit-norm."""
        return self.heads(self.features(x))
