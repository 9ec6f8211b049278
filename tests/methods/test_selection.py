"""Selection and target maths (spec 3.2, 3.5, 3.6; spec 8 items 6-8, 10-11, 13; STYLE section 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coreg.methods.base import index_batches, labelled_unlabelled_batches
from coreg.methods.selection import (
    class_balanced_selection,
    co_divide,
    distribution_align,
    division_loss,
    gmm_clean_prob,
    minmax_normalize,
    mixup,
    sample_mixup,
    sharpen,
)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(p, p).sum(-1)


# ----------------------------------------------------------------------------- sharpen
def test_sharpen_invariants() -> None:
    r = F.softmax(torch.randn(8, 3, generator=_gen()) * 2, 1)
    t = sharpen(r, 0.5)
    torch.testing.assert_close(t.sum(1), torch.ones(8))
    assert torch.equal(t.argmax(1), r.argmax(1))
    assert (_entropy(t) <= _entropy(r) + 1e-6).all()
    torch.testing.assert_close(t, r**2 / (r**2).sum(1, keepdim=True))
    torch.testing.assert_close(sharpen(r, 1.0), r)
    with pytest.raises(ValueError):
        sharpen(r, 0.0)


def test_peer_restriction_and_p_target() -> None:
    # Spec 8 items 10-11 built from the pure pieces the method composes.
    g = _gen()
    p_hat = F.softmax(torch.randn(6, 3, generator=g), 1)
    cand = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [1, 1, 1], [0, 0, 1], [1, 0, 1]]).float()
    q = (p_hat * cand) / (p_hat * cand).sum(1, keepdim=True)
    assert (q[cand == 0] == 0).all()
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    p_bar = F.softmax(torch.randn(6, 3, generator=g), 1)
    w = torch.rand(6, 1, generator=g) * 0.5 + 0.5
    r = w * q + (1 - w) * p_bar
    torch.testing.assert_close(r.sum(1), torch.ones(6))
    t = sharpen(r, 0.5)
    torch.testing.assert_close(t.sum(1), torch.ones(6))
    assert torch.equal(t.argmax(1), r.argmax(1))
    assert (sharpen(q, 0.5)[cand == 0] == 0).all()  # w = 1 keeps the support inside S


# ----------------------------------------------------------------------------- mixup
def test_sample_mixup_lambda_range_and_determinism() -> None:
    rng = np.random.default_rng(0)
    g = _gen()
    lams = [sample_mixup(6, alpha=4.0, rng=rng, generator=g)[0] for _ in range(200)]
    assert min(lams) >= 0.5 and max(lams) <= 1.0
    lam, perm = sample_mixup(6, alpha=4.0, rng=np.random.default_rng(3), generator=_gen())
    lam2, perm2 = sample_mixup(6, alpha=4.0, rng=np.random.default_rng(3), generator=_gen())
    assert lam == lam2 and torch.equal(perm, perm2)
    assert sorted(perm.tolist()) == list(range(6)) and perm.dtype == torch.long
    with pytest.raises(ValueError):
        sample_mixup(6, alpha=0.0, rng=rng, generator=g)


def test_mixup_one_permutation_and_targets_sum_to_one() -> None:
    m = 6
    x = torch.arange(m, dtype=torch.float32).view(m, 1, 1, 1).expand(m, 1, 2, 2)
    targets = F.softmax(torch.randn(m, 3, generator=_gen()), 1)
    perm = torch.randperm(m, generator=_gen())
    mx, mt = mixup(x, targets, lam=0.7, perm=perm)
    torch.testing.assert_close(mt.sum(1), torch.ones(m))
    torch.testing.assert_close(mx[:, 0, 0, 0], 0.7 * torch.arange(m).float() + 0.3 * perm.float())
    torch.testing.assert_close(mt, 0.7 * targets + 0.3 * targets[perm])
    same_x, same_t = mixup(x, targets, lam=1.0, perm=perm)
    assert torch.equal(same_x, x) and torch.equal(same_t, targets)
    with pytest.raises(ValueError):
        mixup(x, targets[:5], lam=0.5, perm=perm)


# ----------------------------------------------------------------------------- distribution alignment
def test_distribution_align_identity_and_prior_scale() -> None:
    k = 3
    base = torch.tensor([0.6, 0.3, 0.1])
    probs = torch.stack([base.roll(i) for i in range(k)] * 2)  # column means exactly 1/K
    memory = torch.full((6, k), 1.0 / k)
    prior = torch.full((k,), 1.0 / k)
    out = distribution_align(probs, memory, torch.arange(6), prior)
    torch.testing.assert_close(out, probs)
    out_scaled = distribution_align(probs, memory.clone(), torch.arange(6), prior * 7)
    torch.testing.assert_close(out_scaled, out)


def test_distribution_align_writes_before_mean() -> None:
    g = _gen()
    memory = torch.full((5, 3), 1.0 / 3)
    probs = F.softmax(torch.randn(2, 3, generator=g) * 3, 1)
    index = torch.tensor([4, 1])
    prior = torch.tensor([0.2, 0.3, 0.5])
    out = distribution_align(probs, memory, index, prior)
    torch.testing.assert_close(memory[index], probs)
    expected = probs * prior / memory.mean(0)
    torch.testing.assert_close(out, expected / expected.sum(1, keepdim=True))
    torch.testing.assert_close(out.sum(1), torch.ones(2))


# ----------------------------------------------------------------------------- division loss
def test_division_loss_properties() -> None:
    g = _gen()
    p = F.softmax(torch.randn(6, 4, generator=g), 1)
    cand = (torch.rand(6, 4, generator=g) < 0.5).float()
    cand[:, 0] = 1
    loss = division_loss(p, cand)
    assert loss.shape == (6,) and (loss >= 0).all()
    torch.testing.assert_close(loss, -torch.log((p * cand).max(1).values))
    p2 = p.clone()
    p2[cand == 0] = 0.9  # probabilities outside S do not matter
    torch.testing.assert_close(division_loss(p2, cand), loss)
    zero = torch.zeros(1, 4)
    zero[0, 1] = 1.0
    assert torch.isfinite(division_loss(zero, torch.tensor([[1.0, 0, 0, 0]]))).all()  # clamped, not inf


def test_minmax_normalize() -> None:
    x = np.array([3.0, 5.0, 4.0, 9.0])
    y = minmax_normalize(x)
    assert y.min() == 0.0 and y.max() == 1.0
    assert np.array_equal(minmax_normalize(np.full(4, 2.5)), np.zeros(4))
    with pytest.raises(ValueError):
        minmax_normalize(np.array([1.0, np.inf]))


# ----------------------------------------------------------------------------- GMM / co-divide
def _bimodal(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    low = rng.normal(0.1, 0.03, 800)
    high = rng.normal(0.7, 0.05, 200)
    return np.concatenate([low, high]), np.r_[np.ones(800, bool), np.zeros(200, bool)]


def test_co_divide_prefers_low_loss_mode() -> None:
    losses, is_low = _bimodal()
    w = co_divide(losses, [], seed=0)
    assert w.shape == (1000,) and (w >= 0).all() and (w <= 1).all()
    assert (w[is_low] > 0.5).mean() >= 0.99
    assert (w[~is_low] < 0.5).mean() >= 0.99


def test_co_divide_affine_invariance() -> None:
    losses, _ = _bimodal(1)
    w = co_divide(losses, [], seed=0)
    w_affine = co_divide(3.7 * losses + 12.0, [], seed=0)
    np.testing.assert_allclose(w_affine, w, atol=1e-6)


def test_co_divide_history_window() -> None:
    rng = np.random.default_rng(0)
    losses, _ = _bimodal(2)
    old = [rng.random(1000) for _ in range(6)]
    history = list(old)
    w = co_divide(losses, history, seed=0)  # 6 old + 1 new = 7 -> only the last 5 count
    assert len(history) == 5
    expected = gmm_clean_prob(np.mean(np.stack(old[-4:] + [minmax_normalize(losses)]), 0), seed=0)
    np.testing.assert_array_equal(w, expected)
    w_short = co_divide(losses, list(old[-4:]), seed=0)
    np.testing.assert_array_equal(w, w_short)
    first = []
    co_divide(losses, first, seed=0)
    assert len(first) == 1 and first[0].min() == 0.0 and first[0].max() == 1.0


def test_co_divide_seeded_determinism_and_errors() -> None:
    losses, _ = _bimodal(3)
    np.testing.assert_array_equal(co_divide(losses, [], seed=5), co_divide(losses, [], seed=5))
    with pytest.raises(ValueError):
        co_divide(losses, [np.zeros(3)], seed=0)
    with pytest.raises(ValueError):
        co_divide(losses, [], seed=0, window=0)
    assert np.array_equal(gmm_clean_prob(np.zeros(5), seed=0), np.ones(5))


# ----------------------------------------------------------------------------- robust division
def test_per_class_division_rescues_a_hard_class() -> None:
    rng = np.random.default_rng(0)
    # class 0 is "easy" (losses near 0.1 / 0.7), class 1 "hard": every loss is shifted up by 1.0, so
    # a single global mixture puts all of class 1 on the noisy side
    easy = np.r_[rng.normal(0.1, 0.03, 160), rng.normal(0.7, 0.05, 40)]
    hard = np.r_[rng.normal(1.1, 0.03, 160), rng.normal(1.7, 0.05, 40)]
    losses, groups = np.r_[easy, hard], np.r_[np.zeros(200, int), np.ones(200, int)]
    w_global = co_divide(losses, [], seed=0)
    assert (w_global[200:] > 0.5).mean() < 0.05
    w = co_divide(losses, [], seed=0, groups=groups, min_group=20)
    clean = np.r_[np.ones(160), np.zeros(40), np.ones(160), np.zeros(40)].astype(bool)
    assert ((w > 0.5) == clean).mean() > 0.97
    # a group below min_group keeps the global values
    small = np.r_[groups[:390], np.full(10, 2)]
    w_small = co_divide(losses, [], seed=0, groups=small, min_group=20)
    assert np.array_equal(w_small[390:], w_global[390:])
    with pytest.raises(ValueError, match="groups"):
        co_divide(losses, [], seed=0, groups=groups[:10])


def test_class_balanced_selection_tops_up_starved_groups() -> None:
    rng = np.random.default_rng(1)
    n, k = 300, 3
    groups = np.repeat(np.arange(k), n // k)
    w = rng.uniform(0, 1, n)
    w[groups == 2] = rng.uniform(0, 0.2, 100)  # group 2 starved by the threshold
    scores = rng.normal(size=n)
    plain = w > 0.5
    sel = class_balanced_selection(w, groups, scores, threshold=0.5, num_groups=k, min_ratio=0.5)
    assert (sel >= plain).all()  # a superset of the threshold split
    rate = plain.mean()
    for g in range(k):
        assert sel[groups == g].sum() >= np.ceil(0.5 * rate * 100)
    added = sel & ~plain
    assert set(groups[added]) == {2}  # only the starved group changed
    # the added samples are group 2's best-scored ones
    g2 = np.flatnonzero(groups == 2)
    best = g2[np.argsort(-scores[g2])][: added.sum()]
    assert set(np.flatnonzero(added)) == set(best)
    assert np.array_equal(class_balanced_selection(w, groups, scores, threshold=0.5, num_groups=k, min_ratio=0), plain)
    with pytest.raises(ValueError):
        class_balanced_selection(w, groups, scores, threshold=0.5, num_groups=k, min_ratio=1.5)


def test_index_batches_floor_and_single_sample_merge() -> None:
    idx = torch.arange(5)
    assert [b.tolist() for b in index_batches(idx, 2, generator=None)] == [[0, 1], [2, 3, 4]]
    assert [b.tolist() for b in index_batches(torch.arange(3), 2, generator=None)] == [[0, 1, 2]]
    g = torch.Generator().manual_seed(0)
    one = index_batches(torch.arange(10), 4, generator=g)
    assert sorted(torch.cat(one).tolist()) == list(range(10))  # every index exactly once
    many = index_batches(torch.arange(10), 4, generator=torch.Generator().manual_seed(0), min_batches=7)
    assert len(many) >= 7
    # full passes, each a permutation: every index appears equally often
    counts = torch.bincount(torch.cat(many), minlength=10)
    assert (counts == counts[0]).all() and counts[0] >= 2
    # min_batches=0 draws one permutation, exactly as before
    assert all(torch.equal(a, b) for a, b in zip(one, many[: len(one)]))


def test_labelled_unlabelled_batches_pair_p_with_u() -> None:
    labelled = torch.zeros(50, dtype=torch.bool)
    labelled[:12] = True
    lab, unl = labelled_unlabelled_batches(labelled, 4, generator=torch.Generator().manual_seed(0), min_batches=6)
    assert len(lab) == len(unl) >= 6
    assert all(labelled[b].all() for b in lab) and all((~labelled[b]).all() for b in unl)
    lab2, unl2 = labelled_unlabelled_batches(labelled, 4, generator=torch.Generator().manual_seed(0),
                                             use_unlabelled=False)
    assert len(lab2) == 3 and all(len(u) == 0 for u in unl2)
