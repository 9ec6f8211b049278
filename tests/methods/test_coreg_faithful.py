"""The ``faithful`` preset reproduces the reference behaviour bit for bit.

``data/coreg_faithful_golden.json`` was recorded by ``data/make_coreg_faithful_golden.py`` at
commit beb1ffe, before the robust defaults existed, with one bug fix applied (``index_batches``
merged a 1-sample last batch into the wrong batch) (1 CPU thread, fp32): the hash of both
networks' final weights and the per-epoch metrics of a 4-epoch run covering warm-up,
co-training and the representation terms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.methods.data.make_coreg_faithful_golden import run_short

GOLDEN = Path(__file__).parent / "data" / "coreg_faithful_golden.json"


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_faithful_preset_is_bit_identical_to_the_reference(one_thread) -> None:
    golden = json.loads(GOLDEN.read_text())
    digest, history = run_short(["preset=faithful"])
    assert history == golden["history"]
    assert digest == golden["sha256"]


def test_robust_default_differs_from_the_reference(one_thread) -> None:
    golden = json.loads(GOLDEN.read_text())
    digest, history = run_short([])
    assert digest != golden["sha256"]
