"""Noise-tolerant contrastive loss (spec 3.8; spec 8 item 17).

Each mode is compared with a brute-force double loop over the set definitions of spec 3.8.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coreg.losses import CONTRASTIVE_MODES, NoiseTolerantContrastiveLoss

B, Q, D, K = 9, 12, 4, 3
T = 0.07


def _bank(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(B, D, generator=g), dim=1)
    k = F.normalize(torch.randn(B, D, generator=g), dim=1)
    queue = F.normalize(torch.randn(Q, D, generator=g), dim=1)
    soft = F.softmax(torch.randn(B, K, generator=g), 1)
    queue_labels = torch.randint(0, K, (Q,), generator=g)
    flags = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=torch.float32)
    queue_flags = (torch.rand(Q, generator=g) < 0.5).float()
    bank = torch.cat([q, k, queue])
    labels = torch.cat([soft.argmax(1), soft.argmax(1), queue_labels])
    bank_flags = torch.cat([flags, flags, queue_flags])
    return q, bank, labels, bank_flags


def _sets(mode: str, i: int, labels: list[int], flags: list[int]) -> tuple[set[int], set[int], float]:
    """Pos(i), Ign(i) and the anchor weight, straight from the spec's words."""
    n = len(labels)
    own = B + i
    same = {j for j in range(n) if labels[j] == labels[i]}
    confident_same = {j for j in same if j != i and flags[i] == 1 and flags[j] == 1}
    if mode == "supcon":
        return same - {i}, set(), 1.0
    pos = {own} | confident_same
    if mode == "modified":
        if flags[i] == 1:
            ign = {j for j in same if flags[j] == 0}
        else:
            ign = same - {own}
        return pos, ign, 1.0
    if mode == "hcp":
        return pos, set(), 1.0
    if mode == "hcpn":
        ign = {j for j in range(n) if flags[j] == 0} if flags[i] == 1 else set()
        return pos, ign, float(flags[i])
    raise AssertionError(mode)


def _brute_force(mode: str, q: torch.Tensor, bank: torch.Tensor, labels: torch.Tensor, flags: torch.Tensor) -> float:
    sim = (q.double() @ bank.double().t() / T).tolist()
    lab, fl = labels.tolist(), [int(f) for f in flags.tolist()]
    n = len(lab)
    losses = []
    for i in range(B):
        if mode == "unsupcon":
            cols = [B + i] + list(range(2 * B, n))
            denom = math.log(sum(math.exp(sim[i][j]) for j in cols))
            losses.append(-(sim[i][B + i] - denom))
            continue
        pos, ign, weight = _sets(mode, i, lab, fl)
        den = [j for j in range(n) if j != i and j not in ign]
        log_norm = math.log(sum(math.exp(sim[i][j]) for j in den))
        losses.append(weight * -sum(sim[i][p] - log_norm for p in pos) / len(pos))
    return sum(losses) / B


@pytest.mark.parametrize("mode", CONTRASTIVE_MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_brute_force(mode: str, seed: int) -> None:
    q, bank, labels, flags = _bank(seed)
    got = NoiseTolerantContrastiveLoss(mode)(q, bank, labels, flags, B)
    assert got.item() == pytest.approx(_brute_force(mode, q, bank, labels, flags), abs=1e-6, rel=1e-6)
    # bool flags give the same value
    got_bool = NoiseTolerantContrastiveLoss(mode)(q, bank, labels, flags.bool(), B)
    assert got_bool.item() == pytest.approx(got.item(), abs=1e-6)


def test_set_properties_modified() -> None:
    _, _, labels, flags = _bank()
    pos, den, weight = NoiseTolerantContrastiveLoss("modified").masks(labels, flags, B)
    n = labels.shape[0]
    ign = ~den
    for i in range(B):
        own = B + i
        assert pos[i, own] and den[i, own]  # own key: positive, never ignored
        assert not pos[i, i] and not den[i, i]  # the anchor itself is excluded
        if flags[i] == 0:
            assert int(pos[i].sum()) == 1  # a U anchor has exactly one positive
        for j in range(n):
            if j == i:
                continue
            assert not (pos[i, j] and ign[i, j])  # disjoint
            if labels[j] != labels[i]:
                assert not pos[i, j] and den[i, j]  # different label: never positive, never ignored
    assert torch.equal(weight, torch.ones(B))


def test_gradient_reaches_q_through_anchor_and_bank_rows() -> None:
    q0, bank, labels, flags = _bank()
    k, queue = bank[B:2 * B], bank[2 * B:]
    loss_fn = NoiseTolerantContrastiveLoss()
    q1 = q0.clone().requires_grad_(True)
    loss_fn(q1, torch.cat([q1, k, queue]), labels, flags, B).backward()
    q2 = q0.clone().requires_grad_(True)
    loss_fn(q2, torch.cat([q2.detach(), k, queue]), labels, flags, B).backward()
    assert torch.isfinite(q1.grad).all()
    assert not torch.allclose(q1.grad, q2.grad)  # bank rows 0..B-1 carry gradient too


def test_temperature_scaling_and_errors() -> None:
    q, bank, labels, flags = _bank()
    base = NoiseTolerantContrastiveLoss("modified")(q, bank, labels, flags, B)
    scaled = NoiseTolerantContrastiveLoss("modified", base_temperature=0.14)(q, bank, labels, flags, B)
    assert scaled.item() == pytest.approx(base.item() / 2, rel=1e-6)
    with pytest.raises(ValueError, match="modified"):
        NoiseTolerantContrastiveLoss("SupCon")
    with pytest.raises(ValueError):
        NoiseTolerantContrastiveLoss()(q, bank[: B + 1], labels[: B + 1], flags[: B + 1], B)
    with pytest.raises(ValueError):
        NoiseTolerantContrastiveLoss()(q, bank, labels.float(), flags, B)


def test_bf16_inputs_give_finite_float32_loss() -> None:
    q, bank, labels, flags = _bank()
    loss = NoiseTolerantContrastiveLoss()(q.bfloat16(), bank.bfloat16(), labels, flags, B)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize("mode", ["modified", "unsupcon"])
def test_autocast_keeps_logits_float32(mode: str) -> None:
    q, bank, labels, flags = _bank()
    want = NoiseTolerantContrastiveLoss(mode)(q, bank, labels, flags, B)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = NoiseTolerantContrastiveLoss(mode)(q, bank, labels, flags, B)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), abs=1e-6)
