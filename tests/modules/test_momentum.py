"""Key-encoder EMA helpers (spec 3.8; spec 8 item 19)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from coreg.modules import copy_parameters, update_momentum


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        model[1].running_mean.fill_(3.0)
    return model, ema


def test_m_one_leaves_ema_unchanged() -> None:
    model, ema = _pair()
    before = [p.clone() for p in ema.parameters()]
    update_momentum(model, ema, 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, ema.parameters()))


def test_m_zero_copies_parameters() -> None:
    model, ema = _pair()
    update_momentum(model, ema, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ema.parameters()))


def test_formula_and_buffers_untouched() -> None:
    model, ema = _pair()
    before = [p.clone() for p in ema.parameters()]
    update_momentum(model, ema, 0.999)
    for old, new, src in zip(before, ema.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.999 * old + 0.001 * src)
        assert not new.requires_grad and new.grad is None
    assert ema[1].running_mean.abs().sum() == 0  # buffers are not averaged


def test_copy_parameters_only() -> None:
    model, ema = _pair()
    copy_parameters(model, ema)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ema.parameters()))
    assert ema[1].running_mean.abs().sum() == 0


def test_errors() -> None:
    model, ema = _pair()
    with pytest.raises(ValueError):
        update_momentum(model, ema, 1.5)
    with pytest.raises(ValueError):
        copy_parameters(model, nn.Linear(3, 4))
