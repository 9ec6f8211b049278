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


def write_npz(path, candidates, *, classes, data=None, **arrays) -> None:
    """An annotation file as an outside tool would write it (no Annotation validation)."""
    import json

    meta = {"format_version": 1, "classes": list(classes), "annotator": {"kind": "llava"}, "data": data or {}}
    np.savez(path, candidates=candidates, meta=np.array(json.dumps(meta)), **arrays)


def test_probabilities_as_candidates_are_refused_not_booleanised(tmp_path, digits) -> None:
    ann = simulate_annotation(digits, kind="instance", seed=0)
    probs = ann.scores  # every cell > 0: astype(bool) would make every set hold every class
    with pytest.raises(AnnotationError, match=r"values other than 0 and 1 .*store probabilities as 'scores'"):
        Annotation(candidates=probs, classes=digits.classes, annotator={"kind": "x"})
    write_npz(tmp_path / "p.npz", probs, classes=digits.classes, data=digits.describe())
    with pytest.raises(AnnotationError, match="values other than 0 and 1") as e:
        load_annotation_for(tmp_path / "p.npz", digits)
    assert "\n" not in str(e.value)
    # 0/1 in any numeric dtype is a set and is accepted as such
    for dtype in (np.float32, np.int64, np.uint8):
        write_npz(tmp_path / "ok.npz", ann.candidates.astype(dtype), classes=digits.classes, data=digits.describe())
        assert np.array_equal(load_annotation_for(tmp_path / "ok.npz", digits).candidates, ann.candidates)


@pytest.mark.parametrize(("value", "match"), [(np.nan, "NaN or inf in 1 rows .*row 5"), (np.inf, "NaN or inf"),
                                              (-0.5, "negative"), (None, "sum to 0")])
def test_bad_scores_are_refused_at_load(tmp_path, digits, value, match) -> None:
    ann = simulate_annotation(digits, kind="instance", seed=0)
    scores = ann.scores.copy()
    if value is None:
        scores[5] = 0.0
    else:
        scores[5, 3] = value
    write_npz(tmp_path / "s.npz", ann.candidates, classes=digits.classes, data=digits.describe(), scores=scores)
    with pytest.raises(AnnotationError, match=f"scores .*{match}"):
        Annotation.load(tmp_path / "s.npz")
    test_scores = np.full((4, 10), 0.1, np.float32)
    test_scores[2, 0] = np.nan
    with pytest.raises(AnnotationError, match="test_scores hold NaN"):
        Annotation(candidates=ann.candidates, classes=digits.classes, annotator={"kind": "x"}, test_scores=test_scores)


def test_truncated_empty_or_corrupt_file_is_one_line(tmp_path, digits) -> None:
    good = simulate_annotation(digits, kind="instance", seed=0).save(tmp_path / "a.npz").read_bytes()
    cases = {"empty.npz": b"", "half.npz": good[: len(good) // 2], "tail.npz": good[:-40]}
    corrupt = bytearray(good)
    corrupt[200:260] = b"\x00" * 60  # inside the compressed candidates member: zlib / CRC error
    cases["corrupt.npz"] = bytes(corrupt)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(AnnotationError, match=rf"(empty|cannot read).*{name}") as e:
            Annotation.load(tmp_path / name)
        assert "\n" not in str(e.value), name


def test_annotation_without_fingerprint_needs_ids_in_row_order(tmp_path, digits) -> None:
    ann = simulate_annotation(digits, kind="flip", q=0.1, eta=0.1, seed=0)
    write_npz(tmp_path / "bare.npz", ann.candidates, classes=digits.classes)
    with pytest.raises(AnnotationError, match="no dataset fingerprint.*coreg import"):
        load_annotation_for(tmp_path / "bare.npz", digits)
    ids = list(digits.train.ids)
    write_npz(tmp_path / "ids.npz", ann.candidates, classes=digits.classes, data={"ids": ids})
    assert np.array_equal(load_annotation_for(tmp_path / "ids.npz", digits).candidates, ann.candidates)
    perm = np.random.default_rng(0).permutation(len(ids))
    write_npz(tmp_path / "perm.npz", ann.candidates[perm], classes=digits.classes, data={"ids": [ids[i] for i in perm]})
    with pytest.raises(AnnotationError, match="rows are in another order"):
        load_annotation_for(tmp_path / "perm.npz", digits)
    write_npz(tmp_path / "other.npz", ann.candidates, classes=digits.classes, data={"ids": ["x"] + ids[1:]})
    with pytest.raises(AnnotationError, match=r"ids do not match .*1 unknown"):
        load_annotation_for(tmp_path / "other.npz", digits)
