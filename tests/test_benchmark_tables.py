"""benchmarks/accuracy_small.py: the tables it prints (pure functions, no training)."""

from __future__ import annotations

import pytest

from benchmarks.accuracy_small import seed_summary, table


def _row(method: str, seed: int, acc: float, *, annot: float | None = 0.5, label: str = "cifar") -> dict:
    return {"setting": "s", "label": label, "seed": seed, "method": method, "epochs": 60, "warmup": 8,
            "sets": [], "test_acc": acc, "best_test_acc": acc + 0.01, "annotator_test_acc": annot,
            "annotator_train_acc": 0.49, "gain_vs_annotator": None if annot is None else acc - annot,
            "avg_set_size": 2.0, "eta": 0.3, "cpu_s": 1.0}


def test_seed_summary_averages_each_method_over_its_seeds() -> None:
    rows = [_row("coreg", 0, 0.50), _row("coreg", 1, 0.54), _row("coreg", 2, 0.46),
            _row("kd", 0, 0.48)]  # one seed only: not summarised
    lines = seed_summary(rows).splitlines()
    assert len(lines) == 3 and "| coreg | 0,1,2 |" in lines[2]
    cells = [c.strip() for c in lines[2].split("|")]
    assert cells[4] == "0.500 (0.460-0.540)"
    assert cells[5] == "0.510"
    assert cells[7] == "+0.0 pts (-4.0)"
    assert "kd" not in seed_summary(rows)


def test_seed_summary_is_empty_without_repeated_seeds() -> None:
    assert seed_summary([_row("coreg", 0, 0.5), _row("kd", 0, 0.4)]) == ""


@pytest.mark.parametrize("annot, gain", [(0.5, "+4.0 pts"), (None, "n/a")])
def test_table_reports_the_gain_over_the_annotator(annot, gain) -> None:
    row = _row("coreg", 0, 0.54, annot=annot)
    line = table([row]).splitlines()[2]
    assert gain in line and "| coreg | 0.540 | 0.550 |" in line
