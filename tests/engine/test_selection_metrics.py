"""Label-free selection metrics (PLENCH covering rate / approximated accuracy) and their use in ``fit``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coreg.engine.evaluate import approximated_accuracy, covering_rate

CAND = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)
# Probabilities chosen by hand; log-probabilities are logits whose softmax gives them back.
PROBS = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.7, 0.2]])


def plench_reference(logits: torch.Tensor, partial_y: torch.Tensor) -> float:
    """Row loop transcribing PLENCH's ``val_approximated_accuracy`` (plench/lib/misc.py)."""
    correct = 0.0
    for z, s in zip(logits, partial_y.float()):
        conf = torch.softmax(z, 0) * s
        conf = conf / (conf.sum() + 1e-12)
        risk = torch.ones_like(s)
        risk[z.argmax()] = 0
        correct += 1.0 - float((risk * conf).sum())
    return correct / len(logits)


def test_covering_rate_constructed() -> None:
    pred = torch.tensor([0, 0, 2, 1])  # in, out, in, in
    assert covering_rate(pred, CAND) == pytest.approx(0.75)
    assert covering_rate(pred, CAND.float()) == pytest.approx(0.75)
    assert math.isnan(covering_rate(torch.empty(0, dtype=torch.long), CAND[:0]))


def test_approximated_accuracy_constructed() -> None:
    # Row 0: pred 0, in-set confidence 0.5 / 0.8; row 1: pred 0 is outside {1, 2} -> 0;
    # row 2: singleton {2} predicted -> 1; row 3: full set -> p_pred = 0.7.
    expected = (0.625 + 0.0 + 1.0 + 0.7) / 4
    logits = PROBS.log()
    assert approximated_accuracy(logits, CAND) == pytest.approx(expected, abs=1e-6)
    assert approximated_accuracy(logits * 1.0 + 3.0, CAND.float()) == pytest.approx(expected, abs=1e-6)  # shift-invariant
    assert approximated_accuracy(logits, CAND) <= covering_rate(logits.argmax(1), CAND)


def test_approximated_accuracy_matches_plench_reference() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    cand = torch.rand(64, 5, generator=g) < 0.4
    cand[torch.arange(64), torch.randint(0, 5, (64,), generator=g)] = True  # no empty set
    ours = approximated_accuracy(logits, cand)
    assert ours == pytest.approx(plench_reference(logits, cand), abs=1e-5)
    assert 0.0 <= ours <= covering_rate(logits.argmax(1), cand) + 1e-9


def test_approximated_accuracy_from_indices_is_the_zero_temperature_limit() -> None:
    pred = torch.tensor([0, 0, 2, 1])
    assert approximated_accuracy(pred, CAND) == covering_rate(pred, CAND)
    sharp = torch.nn.functional.one_hot(pred, 3).float() * 200.0
    assert approximated_accuracy(sharp, CAND) == pytest.approx(covering_rate(pred, CAND), abs=1e-6)
    assert math.isnan(approximated_accuracy(torch.empty(0, 3), CAND[:0]))


@pytest.fixture(scope="module")
def flip_annotation(digits):  # noqa: ANN001, ANN201
    from coreg.simulate import simulate_annotation

    return simulate_annotation(digits, kind="flip", q=0.2, eta=0.1, seed=0)


def _tiny_cfg():  # noqa: ANN202
    from coreg._cli.train import build_train_config

    return build_train_config("coreg", overrides=["model.name=tiny_cnn", "method.batch_size=64"], epochs=2,
                              warmup=1, device="cpu")


def test_fit_logs_label_free_metrics_per_epoch(digits, flip_annotation, tmp_path) -> None:  # noqa: ANN001
    from coreg.engine import fit
    from coreg.tracking.base import RecordingTracker

    tracker = RecordingTracker()
    seen: list[tuple[int, dict[str, float]]] = []
    res = fit(_tiny_cfg(), digits, flip_annotation, out_dir=tmp_path / "run", tracker=tracker,
              callbacks=[lambda e, m: seen.append((e, dict(m)))], progress=False)
    assert res.selection_metric == "val_approx_acc"
    cr, aa = tracker.history("val_covering_rate"), tracker.history("val_approx_acc")
    assert len(cr) == len(aa) == 2
    assert all(0.0 <= a <= c + 1e-9 <= 1.0 + 1e-9 for a, c in zip(aa, cr))
    assert tracker.history("val_acc") == []
    assert [e for e, _ in seen] == [0, 1] and all("val_approx_acc" in m for _, m in seen)


def test_fit_selects_on_val_acc_with_gold_in_holdout(digits, flip_annotation, tmp_path) -> None:  # noqa: ANN001
    from coreg.engine import fit
    from coreg.engine.trainer import prepare_data
    from coreg.gold import sample_shots
    from coreg.tracking.base import RecordingTracker

    cfg = _tiny_cfg()
    gold = sample_shots(digits, 20, seed=0)
    _, _, info = prepare_data(digits, flip_annotation, cfg, device=torch.device("cpu"), gold=gold)
    held = gold[info["val_index"]]
    assert (held >= 0).any()
    tracker = RecordingTracker()
    res = fit(cfg, digits, flip_annotation, out_dir=tmp_path / "run", tracker=tracker, gold=gold, progress=False)
    assert res.selection_metric == "val_acc"
    accs = tracker.history("val_acc")
    assert len(accs) == 2
    n = int((held >= 0).sum())
    # val_acc is a share of the n held-out gold labels.
    assert all(np.isclose(a * n, round(a * n)) for a in accs)
    assert "val_acc" in res.metrics and "val_approx_acc" in res.metrics
