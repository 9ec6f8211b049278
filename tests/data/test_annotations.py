"""Annotation file: round trip, atomic write, refusal of other data, stats."""

from __future__ import annotations

import numpy as np
import pytest

from coreg.data import Annotation, AnnotationError, annotation_stats, load_annotation_for, load_dataset
from coreg.simulate import simulate_annotation


def test_round_trip_and_binding(tmp_path, digits) -> None:
    ann = simulate_annotation(digits, kind="instance", seed=0)
    path = ann.save(tmp_path / "a.npz")
    back = load_annotation_for(path, digits)
    assert np.array_equal(back.candidates, ann.candidates)
    assert np.allclose(back.scores, ann.scores)
    assert np.array_equal(back.template_preds, ann.template_preds)
    assert back.classes == digits.classes and back.fingerprint == digits.fingerprint
    assert back.annotator["kind"] == "instance"
    assert not list(tmp_path.glob(".*tmp")), "no temporary file left behind"


def test_refuses_other_split(tmp_path, digits) -> None:
    ann = simulate_annotation(digits, kind="flip", q=0.1, eta=0.1, seed=0)
    path = ann.save(tmp_path / "a.npz")
    other = load_dataset("digits", seed=1)  # another split: same N and classes, other content
    with pytest.raises(AnnotationError, match="other data"):
        load_annotation_for(path, other)


def test_refuses_wrong_classes_and_size(tmp_path, digits) -> None:
    ann = simulate_annotation(digits, kind="flip", q=0.1, eta=0.1, seed=0)
    bad = Annotation(candidates=ann.candidates, classes=[f"c{i}" for i in range(10)], annotator={"kind": "x"})
    with pytest.raises(AnnotationError, match="classes"):
        bad.check_against(digits)
    short = Annotation(candidates=ann.candidates[:-1], classes=digits.classes, annotator={"kind": "x"})
    with pytest.raises(AnnotationError, match="rows"):
        short.check_against(digits)


def test_rejects_empty_rows_and_non_annotation(tmp_path) -> None:
    c = np.ones((3, 2), bool)
    c[1] = False
    with pytest.raises(AnnotationError, match="empty candidate rows"):
        Annotation(candidates=c, classes=["a", "b"], annotator={"kind": "x"})
    p = tmp_path / "x.npz"
    np.savez(p, foo=np.zeros(3))
    with pytest.raises(AnnotationError, match="not a coreg annotation"):
        Annotation.load(p)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(AnnotationError, match="cannot read"):
        Annotation.load(tmp_path / "junk.npz")


def test_stats_match_brute_force(digits) -> None:
    ann = simulate_annotation(digits, kind="flip", q=0.2, eta=0.3, seed=4)
    y = digits.train.labels
    st = annotation_stats(ann, y)
    assert st["avg_set_size"] == pytest.approx(np.mean([row.sum() for row in ann.candidates]))
    assert st["eta"] == pytest.approx(np.mean([not ann.candidates[i, y[i]] for i in range(len(y))]))
    assert sum(st["set_size_hist"]) == len(y)
    assert sum(p["n"] for p in st["per_class"]) == len(y)


def test_single_labels_are_unbiased_candidates(digits) -> None:
    ann = simulate_annotation(digits, kind="flip", q=0.5, eta=0.0, seed=0)
    single = ann.single_labels()
    assert ann.candidates[np.arange(ann.num_samples), single].all()
    # with q = 0.5 the gold label is only one of ~5.5 candidates: a uniform draw hits it ~1/5 of the time,
    # while the lowest-index rule would pick class 0 for about half of the rows
    assert (single == 0).mean() < 0.25
    assert np.array_equal(single, ann.single_labels())
