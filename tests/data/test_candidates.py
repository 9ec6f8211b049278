"""Synthetic noisy partial labels: spec section 8 items 3-4, determinism, instance generator."""

from __future__ import annotations

import numpy as np
import pytest

from coreg.data.candidates import flip_candidates, instance_candidates


def _labels(n: int, k: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, n)


def test_partial_step_mean_set_size_within_binomial_error() -> None:
    n, k, q = 50_000, 100, 0.05
    y = _labels(n, k)
    cand = flip_candidates(y, k, q=q, eta=0.0, seed=0)
    assert cand[np.arange(n), y].all(), "before noise the true label is always a candidate"
    mean = cand.sum(1).mean()
    se = np.sqrt((k - 1) * q * (1 - q) / n)
    assert abs(mean - (1 + q * (k - 1))) < 4 * se  # 5.95 +- 0.02


def test_noise_step_rate_sizes_and_swap() -> None:
    n, k, q, eta = 40_000, 10, 0.1, 0.2
    y = _labels(n, k)
    clean = flip_candidates(y, k, q=q, eta=0.0, seed=3)
    noisy = flip_candidates(y, k, q=q, eta=eta, seed=3)
    rows = np.arange(n)
    # Same partial draws (same seed), so set sizes are unchanged by the noise step.
    assert (clean.sum(1) == noisy.sum(1)).all()
    lost = ~noisy[rows, y]
    full = clean.sum(1) == k
    expected = eta * (~full).mean()
    assert abs(lost.mean() - expected) < 4 * np.sqrt(eta * (1 - eta) / n)
    # Each noisy row lost exactly y and gained exactly one former non-candidate.
    diff = noisy.astype(int) - clean.astype(int)
    assert (diff[lost].sum(1) == 0).all()
    assert ((diff[lost] == 1).sum(1) == 1).all() and ((diff[lost] == -1).sum(1) == 1).all()
    assert (diff[~lost] == 0).all()
    assert noisy.any(1).all()


def test_full_rows_untouched() -> None:
    y = _labels(2000, 3)
    cand = flip_candidates(y, 3, q=1.0, eta=1.0, seed=0)
    assert cand.all()


def test_flip_is_deterministic_under_seed() -> None:
    y = _labels(500, 7)
    a = flip_candidates(y, 7, q=0.2, eta=0.3, seed=11)
    b = flip_candidates(y, 7, q=0.2, eta=0.3, seed=11)
    c = flip_candidates(y, 7, q=0.2, eta=0.3, seed=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("q,eta", [(-0.1, 0.1), (1.5, 0.1), (0.1, -0.01), (0.1, 1.01)])
def test_flip_rejects_rates_out_of_range(q: float, eta: float) -> None:
    with pytest.raises(ValueError, match="must be in"):
        flip_candidates(_labels(10, 3), 3, q=q, eta=eta, seed=0)


def test_instance_candidates_union_of_annotators(digits) -> None:
    x, y = digits.train.images[:600], digits.train.labels[:600]
    cand, scores, preds, names, test_scores = instance_candidates(x, y, 10, shots=2, num_annotators=3, seed=0)
    assert test_scores is None
    assert cand.shape == (600, 10) and preds.shape == (600, 3) and len(names) == 3
    brute = np.zeros_like(cand)
    for i in range(600):
        for a in range(3):
            brute[i, preds[i, a]] = True
    assert np.array_equal(cand, brute)
    assert np.allclose(scores.sum(1), 1.0, atol=1e-5)
    assert cand.any(1).all()
    # Weak but informative: better than chance, and noisy (errors follow the data).
    acc = (scores.argmax(1) == y).mean()
    assert 0.3 < acc < 0.99
    again = instance_candidates(x, y, 10, shots=2, num_annotators=3, seed=0)[0]
    assert np.array_equal(cand, again)


def test_instance_annotators_also_score_the_test_split(digits) -> None:
    x, y = digits.train.images[:600], digits.train.labels[:600]
    cand, scores, _, _, test_scores = instance_candidates(x, y, 10, shots=2, num_annotators=3, seed=0,
                                                          test_images=digits.test.images)
    plain = instance_candidates(x, y, 10, shots=2, num_annotators=3, seed=0)
    assert np.array_equal(cand, plain[0]) and np.array_equal(scores, plain[1])  # training side unchanged
    assert test_scores.shape == (len(digits.test.images), 10)
    assert np.allclose(test_scores.sum(1), 1.0, atol=1e-5)
    # the same annotators on the same images give the same scores: scoring the training images as
    # "test" reproduces the training scores exactly
    again = instance_candidates(x, y, 10, shots=2, num_annotators=3, seed=0, test_images=x)[4]
    assert np.allclose(again, scores, atol=1e-6)
    acc = float((test_scores.argmax(1) == digits.test.labels).mean())
    assert 0.2 < acc < 0.95  # weak but far better than chance


def test_instance_rejects_bad_shots(digits) -> None:
    with pytest.raises(ValueError, match="shots"):
        instance_candidates(digits.train.images, digits.train.labels, 10, shots=0)
    with pytest.raises(ValueError, match="fewer than shots"):
        instance_candidates(digits.train.images, digits.train.labels, 10, shots=10_000)
