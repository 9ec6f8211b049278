"""Self-training loss and ramp (spec 3.6; spec 8 item 14)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coreg.losses import linear_rampup, semi_loss


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def test_ramp_values() -> None:
    w = 10
    assert linear_rampup(w + 0 / 7, w) == 0.0  # first co-training iteration
    assert linear_rampup(w - 3, w) == 0.0
    assert linear_rampup(w + 8, w) == pytest.approx(0.5)
    assert linear_rampup(w + 16, w) == 1.0
    assert linear_rampup(w + 40, w) == 1.0
    assert linear_rampup(w + 2.5, w, length=5) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        linear_rampup(1.0, 0, length=0)


def test_closed_form() -> None:
    g = _gen()
    logits = torch.randn(7, 3, generator=g)
    targets = F.softmax(torch.randn(7, 3, generator=g), 1)
    n = 4
    lx, lu = semi_loss(logits, targets, n)
    want_x = sum(-(targets[i] * F.log_softmax(logits[i], 0)).sum() for i in range(n)) / n
    p = F.softmax(logits, 1)
    want_u = sum(((p[i, j] - targets[i, j]) ** 2) for i in range(n, 7) for j in range(3)) / ((7 - n) * 3)
    torch.testing.assert_close(lx, want_x)
    torch.testing.assert_close(lu, want_u)


def test_empty_parts_are_zero() -> None:
    logits = torch.randn(4, 3, generator=_gen(), requires_grad=True)
    targets = torch.full((4, 3), 1 / 3)
    lx, lu = semi_loss(logits, targets, 4)
    assert lu.item() == 0.0 and lx.item() > 0
    lx, lu = semi_loss(logits, targets, 0)
    assert lx.item() == 0.0 and lu.item() >= 0
    (lx + lu).backward()
    with pytest.raises(ValueError):
        semi_loss(logits, targets, 5)


def test_bf16_logits_give_float32_losses() -> None:
    logits = torch.randn(4, 3, generator=_gen()).bfloat16()
    lx, lu = semi_loss(logits, torch.full((4, 3), 1 / 3), 2)
    assert lx.dtype == lu.dtype == torch.float32
