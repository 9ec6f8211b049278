"""Warm-up losses (spec 3.1; spec 8 item 5; STYLE section 6)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coreg.losses import PartialCELoss, negative_entropy


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _reference_loop(probs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-row loop written from the Co-Reg formula (the reference's shape)."""
    terms = []
    for i in range(probs.shape[0]):
        if bool((targets[i] >= 1).all()):
            continue
        terms.append(-torch.log((targets[i] * probs[i]).sum() + eps))
    if not terms:
        return probs.sum() * 0.0
    return torch.stack(terms).mean()


def test_vectorised_matches_loop_forward_and_backward() -> None:
    g = _gen()
    logits = torch.randn(8, 3, generator=g)
    targets = (torch.rand(8, 3, generator=g) < 0.5).float()
    targets[0] = 1.0  # a full row
    targets[1] = 0.0
    targets[1, 2] = 1.0  # a single-label row
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    got = PartialCELoss()(F.softmax(a, 1), targets)
    want = _reference_loop(F.softmax(b, 1), targets)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-6)
    assert a.grad[0].abs().max() == 0  # the full row gets no gradient


def test_single_label_equals_cross_entropy() -> None:
    g = _gen()
    logits = torch.randn(6, 3, generator=g)
    y = torch.randint(0, 3, (6,), generator=g)
    loss = PartialCELoss()(F.softmax(logits, 1), F.one_hot(y, 3).float())
    assert abs(loss.item() - F.cross_entropy(logits, y).item()) < 1e-4


def test_full_rows_do_not_count_in_denominator() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert PartialCELoss()(probs, targets).item() == pytest.approx(-math.log(0.5 + 1e-5), abs=1e-6)
    all_full = PartialCELoss()(probs, torch.ones(2, 3, dtype=torch.bool))
    assert all_full.item() == 0.0


def test_bf16_autocast_inputs_are_safe() -> None:
    probs = F.softmax(torch.randn(4, 3, generator=_gen()), 1).bfloat16()
    targets = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = PartialCELoss()(probs, targets)
        ne = negative_entropy(probs)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(ne)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        PartialCELoss()(torch.rand(2, 3), torch.rand(2, 4))
    with pytest.raises(ValueError):
        negative_entropy(torch.rand(3))


def test_negative_entropy_bounds() -> None:
    k = 4
    uniform = torch.full((3, k), 1.0 / k)
    assert negative_entropy(uniform).item() == pytest.approx(-math.log(k), abs=1e-6)
    onehot = F.one_hot(torch.tensor([0, 3]), k).float()  # contains exact zeros: 0 log 0 = 0
    assert negative_entropy(onehot).item() == 0.0
    p = F.softmax(torch.randn(8, k, generator=_gen()), 1)
    v = negative_entropy(p).item()
    assert -math.log(k) - 1e-6 <= v <= 0.0
    expected = (p * p.log()).sum(1).mean().item()
    assert v == pytest.approx(expected, abs=1e-6)


def test_negative_entropy_gradient_is_finite_where_softmax_underflows() -> None:
    # A confident wide network's softmax holds exact zeros; xlogy(p, p)'s gradient there is 0/0.
    logits = torch.tensor([[200.0, 0.0, -5.0], [1.0, 2.0, 3.0]], requires_grad=True)
    p = torch.softmax(logits, dim=1)
    assert (p == 0).any()
    loss = negative_entropy(p)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # the value is still the exact mean of sum p log p (0 log 0 = 0)
    q = p.detach()
    ref = torch.where(q > 0, q * q.clamp_min(1e-45).log(), torch.zeros_like(q)).sum(1).mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
