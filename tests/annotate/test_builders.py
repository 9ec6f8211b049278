"""Candidate builders: registry behaviour and the invariants of spec 1.4 / section 8 item 1."""

from __future__ import annotations

import pytest
import torch

from coreg.annotate.builders import (
    BuilderError,
    build_candidates,
    builder_defaults,
    create_builder,
    list_builders,
    register_builder,
)

MODES = ["accu_prob_thres", "multi_prompt", "prob_ratio", "prob_thres", "topk"]


def _probs(p: int = 5, n: int = 64, k: int = 6, seed: int = 0, temp: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(p, n, k, generator=g) * temp).softmax(-1)


def test_registry_lists_all_modes() -> None:
    assert list_builders() == MODES
    assert list_builders("prob_*") == ["prob_ratio", "prob_thres"]


def test_unknown_mode_is_value_error_listing_valid_names() -> None:
    with pytest.raises(ValueError, match="multi_prompt") as e:
        create_builder("nope")
    assert isinstance(e.value, BuilderError)


def test_duplicate_registration_is_an_error() -> None:
    with pytest.raises(ValueError, match="twice"):
        register_builder("topk")(lambda a, t: a > 0)


@pytest.mark.parametrize(("mode", "params", "match"), [
    ("multi_prompt", {"k": 3}, "does not take k"),
    ("topk", {"threshold": 0.5}, "does not take threshold"),
    ("topk", {"k": 0}, "positive integer"),
    ("prob_thres", {"threshold": 1.5}, r"\(0, 1\]"),
    ("accu_prob_thres", {"threshold": 0.0}, r"\(0, 1\]"),
])
def test_bad_parameters(mode: str, params: dict, match: str) -> None:
    with pytest.raises(BuilderError, match=match):
        create_builder(mode, **params)


def test_defaults_and_none_means_default() -> None:
    assert builder_defaults("prob_ratio") == {"k": 5, "threshold": 0.5}
    assert create_builder("topk", k=None).params == {"k": 5}
    assert create_builder("multi_prompt").params == {}


def test_multi_prompt_equals_brute_force_union() -> None:
    probs = _probs(p=7, n=50, k=5)
    got = build_candidates("multi_prompt", template_probs=probs)
    want = torch.zeros(50, 5, dtype=torch.bool)
    for i in range(50):
        for t in range(7):
            row = probs[t, i].tolist()
            want[i, row.index(max(row))] = True
    assert torch.equal(got, want)
    sizes = got.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= min(7, 5)


def test_multi_prompt_identical_templates_give_singletons() -> None:
    one = _probs(p=1, n=40, k=6)
    got = build_candidates("multi_prompt", template_probs=one.repeat(4, 1, 1))
    assert (got.sum(1) == 1).all()


def test_argmax_ties_go_to_lowest_index() -> None:
    probs = torch.tensor([[[0.4, 0.4, 0.2]], [[0.1, 0.45, 0.45]]])  # P=2, N=1, K=3
    assert build_candidates("multi_prompt", template_probs=probs).tolist() == [[True, True, False]]
    flat = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
    assert create_builder("topk", k=1)(flat, flat.argmax(1, keepdim=True)).tolist() == [[True, False, False, False]]
    assert create_builder("topk", k=2)(flat, flat.argmax(1, keepdim=True)).tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_invariants_no_empty_row_and_argmax_included(mode: str, seed: int) -> None:
    probs = _probs(seed=seed, temp=0.3 + 3 * seed)
    mean = probs.mean(0)
    top1 = probs.argmax(-1).T
    # include a uniform row and a one-hot row as edge cases
    mean = torch.cat([mean, torch.full((1, 6), 1 / 6), torch.eye(6)[:1]])
    top1 = torch.cat([top1, torch.zeros(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)])
    cand = create_builder(mode)(mean, top1)
    assert cand.dtype == torch.bool and cand.shape == mean.shape
    assert cand.any(1).all()
    rows = torch.arange(len(mean))
    if mode == "multi_prompt":
        assert cand[rows[:, None], top1].all()
    else:
        assert cand[rows, mean.argmax(1)].all()


@pytest.mark.parametrize("k", [1, 2, 3, 6, 10])
def test_topk_at_most_k(k: int) -> None:
    mean = _probs().mean(0)
    cand = create_builder("topk", k=k)(mean, mean.argmax(1, keepdim=True))
    assert (cand.sum(1) == min(k, 6)).all()
    ratio = create_builder("prob_ratio", k=k, threshold=0.01)(mean, mean.argmax(1, keepdim=True))
    assert (ratio.sum(1) <= k).all()


def test_topk_keeps_the_largest() -> None:
    mean = _probs(n=30).mean(0)
    cand = create_builder("topk", k=3)(mean, mean.argmax(1, keepdim=True))
    kept_min = torch.where(cand, mean, torch.inf).min(1).values
    dropped_max = torch.where(cand, -torch.inf, mean).max(1).values
    assert (kept_min >= dropped_max).all()


@pytest.mark.parametrize("mode", ["prob_ratio", "prob_thres"])
def test_raising_threshold_never_adds_labels(mode: str) -> None:
    mean = _probs(n=200, temp=1.0).mean(0)
    top1 = mean.argmax(1, keepdim=True)
    prev = None
    for thr in [0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]:
        cand = create_builder(mode, threshold=thr)(mean, top1)
        if prev is not None:
            assert not (cand & ~prev).any(), f"threshold {thr} added labels"
        prev = cand
    assert (prev.sum(1) >= 1).all()


def test_prob_ratio_definition() -> None:
    mean = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    top1 = mean.argmax(1, keepdim=True)
    assert create_builder("prob_ratio", k=5, threshold=0.5)(mean, top1).tolist() == [[True, True, False, False]]
    assert create_builder("prob_ratio", k=1, threshold=0.5)(mean, top1).tolist() == [[True, False, False, False]]
    assert create_builder("prob_thres", threshold=0.15)(mean, top1).tolist() == [[True, True, True, False]]
    assert create_builder("prob_thres", threshold=0.9)(mean, top1).tolist() == [[True, False, False, False]]


def test_accu_prob_thres_smallest_top_set() -> None:
    mean = torch.tensor([[0.1, 0.5, 0.25, 0.15]])
    top1 = mean.argmax(1, keepdim=True)
    b = lambda t: create_builder("accu_prob_thres", threshold=t)(mean, top1).tolist()  # noqa: E731
    assert b(0.5) == [[False, True, False, False]]
    assert b(0.75) == [[False, True, True, False]]
    assert b(0.76) == [[False, True, True, True]]
    assert b(1.0) == [[True, True, True, True]]


def test_accu_prob_thres_mass_reached_and_monotone() -> None:
    mean = _probs(n=200, temp=1.0).mean(0)
    top1 = mean.argmax(1, keepdim=True)
    prev = None
    for thr in [0.2, 0.5, 0.8, 0.95]:
        cand = create_builder("accu_prob_thres", threshold=thr)(mean, top1)
        assert ((mean * cand).sum(1) >= thr - 1e-6).all()
        # minimal: dropping the smallest kept class falls below the threshold
        smallest = torch.where(cand, mean, torch.inf).min(1).values
        assert ((mean * cand).sum(1) - smallest < thr).all()
        if prev is not None:
            assert not (prev & ~cand).any(), "a larger mass removed labels"
        prev = cand


def test_builders_accept_numpy() -> None:
    mean = _probs().mean(0).numpy()
    cand = create_builder("topk", k=2)(mean, mean.argmax(1)[:, None])
    assert cand.shape == mean.shape and (cand.sum(1) == 2).all()
