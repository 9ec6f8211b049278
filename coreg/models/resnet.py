"""The Co-Reg "PreAct ResNet-18" variant (spec section 4).

It differs from the canonical PreAct-ResNet (He et al. 2016) in three ways, all kept on purpose
because the published numbers come from it: a conv-BN-ReLU stem, an identity shortcut that adds
the *pre-activated* tensor ``ReLU(BN(x))`` instead of ``x``, and no final BN-ReLU. For the
``"64x64"`` setting the first stage has stride 2, so every setting ends at 4x4 before pooling.

Pooling is adaptive average pooling to 1x1: identical to the reference 4x4 average pooling for
the spec input sizes (the last stage is 4x4), and it also accepts smaller inputs (e.g. 16x16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coreg.models._common import Heads, check_common, scaled
from coreg.models.registry import register_model

__all__ = ["PreActBlock", "PreActResNet18"]


class PreActBlock(nn.Module):
    """Pre-activation residual block: ``a = ReLU(BN(x))``; ``out = conv(ReLU(BN(conv(a)))) + s(a)``.

    ``s`` is a bias-free 1x1 convolution on ``a`` when the stride or the width changes, else the
    identity on ``a`` (the pre-activated tensor, spec 4.1).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, H, W] -> [B, C_out, H/s, W/s]``."""
        a = F.relu(self.bn1(x))
        h = self.conv1(a)
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.shortcut(a)


@register_model("preact_resnet18")
class PreActResNet18(nn.Module):
    """PreAct ResNet-18 (Co-Reg variant) with a classifier and a projection head.

    Args:
        num_classes: K.
        in_channels: image channels (3, or 1 for grey datasets).
        setting: ``"32x32"`` (32x32 and 28x28 inputs; first stage stride 1) or ``"64x64"``
            (64x64 inputs; first stage stride 2).
        width: channel multiplier; stage widths are ``round(c * width)`` (at least 8) for
            c in 64/128/256/512.
        proj_dim: projection dimension (128 in the paper).

    Attributes:
        feature_dim: width of the pooled feature (512 for ``width=1``).

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
        widths = [scaled(c, width) for c in (64, 128, 256, 512)]
        first_stride = 1 if setting == "32x32" else 2
        self.num_classes = num_classes
        self.feature_dim = widths[-1]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for i, planes in enumerate(widths):
            stride = first_stride if i == 0 else 2
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.heads = Heads(self.feature_dim, num_classes, proj_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone feature: ``[B, C, H, W] -> [B, feature_dim]``."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        return torch.flatten(F.adaptive_avg_pool2d(h, 1), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [B, C, H, W]`` -> ``(logits [B, K], z [B, proj_dim])``, z unit-norm."""
        return self.heads(self.features(x))
