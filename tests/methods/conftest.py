"""Tiny synthetic training data for method tests (K=3, 8x8 RGB, N=24)."""

from __future__ import annotations

import pytest
import torch

from coreg.data.datasets import ImageSpec
from coreg.data.transforms import Augmenter
from coreg.methods.base import TrainData


def make_data(n: int = 24, k: int = 3, *, seed: int = 0, size: int = 8) -> TrainData:
    g = torch.Generator().manual_seed(seed)
    gold = torch.arange(n) % k
    images = torch.randint(0, 255, (n, 3, size, size), dtype=torch.uint8, generator=g)
    # make classes separable: a class-dependent brightness offset
    images = (images // 2 + (gold * 60)[:, None, None, None]).to(torch.uint8)
    cand = torch.zeros(n, k)
    cand[torch.arange(n), gold] = 1
    cand[torch.rand(n, k, generator=g) < 0.3] = 1
    spec = ImageSpec(size, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), crop_padding=1)
    scores = cand / cand.sum(1, keepdim=True)
    return TrainData(images=images, candidates=cand, scores=scores, noisy_labels=cand.argmax(1), gold=gold, spec=spec,
                     augment=Augmenter(spec), classes=[f"c{i}" for i in range(k)])


@pytest.fixture
def tiny_data() -> TrainData:
    return make_data()
