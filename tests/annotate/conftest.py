"""Fixtures of the annotation tests: a stub CLIP (exact, countable) and a tiny image-folder dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from coreg.annotate.clip import ClipModel

FOLDER_CLASSES = ["cat", "dog", "frog"]


class FakeTokenizer:
    """Maps each distinct string to its own token id and records every string it sees."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> torch.Tensor:
        self.seen.extend(texts)
        ids = [self.vocab.setdefault(t, len(self.vocab)) for t in texts]
        return torch.tensor(ids, dtype=torch.long)[:, None]


class StubModel:
    """``encode_image``: a fixed linear map of the pixels; ``encode_text``: a fixed table row per token.

    Counts image-encoder calls; can be told to fail after a number of calls (to simulate a crash).
    """

    def __init__(self, *, dim: int = 8, image_size: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.proj = torch.randn(3 * image_size * image_size, dim, generator=g)
        self.table = torch.randn(4096, dim, generator=g)
        self.image_calls = 0
        self.images_seen = 0
        self.fail_after: int | None = None

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail_after is not None and self.image_calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.image_calls += 1
        self.images_seen += int(x.shape[0])
        return x.flatten(1) @ self.proj

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table[tokens[:, 0]]


def _stub_preprocess(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB").resize((4, 4), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1) - 0.5


@pytest.fixture
def make_stub() -> Callable[..., ClipModel]:
    """Factory of a fresh stub :class:`ClipModel` (logit scale 10, weights id ``stub``)."""

    def make(**kw: Any) -> ClipModel:
        return ClipModel(model=StubModel(**kw), preprocess=_stub_preprocess, tokenizer=FakeTokenizer(),
                         name="stub", pretrained="stub", weights_id="stub", device=torch.device("cpu"),
                         logit_scale=10.0)

    return make


@pytest.fixture(scope="session")
def folder_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train/`` (3 classes x 6) and ``test/`` (3 x 2) folders of 8x8 RGB PNGs, colour by class."""
    root = tmp_path_factory.mktemp("folder_data")
    rng = np.random.default_rng(0)
    base = {"cat": (200, 40, 40), "dog": (40, 200, 40), "frog": (40, 40, 200)}
    for split, n in (("train", 6), ("test", 2)):
        for c in FOLDER_CLASSES:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(base[c]) + rng.integers(-30, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def folder_bundle(folder_root: Path) -> Any:
    """The tiny folder dataset, loaded (18 train, 6 test images)."""
    from coreg.data import load_dataset

    return load_dataset(f"folder:{folder_root}")
