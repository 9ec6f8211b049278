"""JSONL import of other models' labels: round trip and every error with its line number."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from coreg.annotate import ImportFormatError, export_jsonl, import_jsonl
from coreg.data import Annotation


def _lines(bundle: Any) -> list[dict[str, Any]]:
    return [{"image": i, "candidates": [bundle.classes[int(y)]]} for i, y in zip(bundle.train.ids,
                                                                                 bundle.train.labels)]


def _write(path: Path, objs: list[Any]) -> Path:
    path.write_text("\n".join(o if isinstance(o, str) else json.dumps(o) for o in objs) + "\n")
    return path


def test_round_trip_with_scores(folder_bundle: Any, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n, k = len(folder_bundle.train), len(folder_bundle.classes)
    cand = rng.random((n, k)) < 0.4
    cand[np.arange(n), rng.integers(0, k, n)] = True
    scores = rng.random((n, k)).astype(np.float32)
    scores /= scores.sum(1, keepdims=True)
    ann = Annotation(candidates=cand, classes=folder_bundle.classes, annotator={"kind": "test"},
                     data=folder_bundle.describe(), scores=scores)
    path = export_jsonl(ann, folder_bundle.train.ids, tmp_path / "a.jsonl")
    first = json.loads(path.read_text().splitlines()[0])
    assert first["image"].startswith("train/")  # folder data: relative paths
    back = import_jsonl(path, folder_bundle, source_model="llava-1.5")
    assert np.array_equal(back.candidates, cand)
    assert np.allclose(back.scores, scores, atol=1e-6)
    assert back.annotator["kind"] == "import" and back.annotator["source_model"] == "llava-1.5"
    assert back.annotator["source"] == str(path)
    back.check_against(folder_bundle)


def test_indices_as_int_or_str_and_optional_scores(digits: Any, tmp_path: Path) -> None:
    objs = []
    for row, (image_id, y) in enumerate(zip(digits.train.ids, digits.train.labels)):
        key: int | str = int(image_id) if row % 2 else image_id
        objs.append({"image": key, "candidates": [digits.classes[int(y)], "0"]})
    ann = import_jsonl(_write(tmp_path / "d.jsonl", objs[::-1]), digits)  # any line order
    assert ann.scores is None
    assert ann.candidates[np.arange(len(digits.train)), digits.train.labels].all()
    assert ann.candidates[:, 0].all()


def test_partial_scores_are_normalised(folder_bundle: Any, tmp_path: Path) -> None:
    objs = _lines(folder_bundle)
    for o in objs:
        o["scores"] = {"cat": 3, "dog": 1}
    ann = import_jsonl(_write(tmp_path / "s.jsonl", objs), folder_bundle)
    assert np.allclose(ann.scores[0], [0.75, 0.25, 0.0])


@pytest.mark.parametrize(("edit", "match"), [
    (lambda o: o.__setitem__(2, '{"image": "train/cat/000.png", '), r":3: not valid JSON"),
    (lambda o: o.__setitem__(2, "[1, 2]"), r":3: expected a JSON object"),
    (lambda o: o[3].__setitem__("candidates", ["cat", "horse"]), r":4: unknown class 'horse'"),
    (lambda o: o[1].__setitem__("candidates", []), r":2: empty candidate list"),
    (lambda o: o[1].__setitem__("candidates", "cat"), r":2: 'candidates' must be a list"),
    # numbers are never thresholded into a set: probabilities belong in 'scores'
    (lambda o: o[1].__setitem__("candidates", {"cat": 0.7, "dog": 0.3}), r":2: 'candidates' .* got numbers"),
    (lambda o: o[1].__setitem__("candidates", [1, 0, 1]), r":2: 'candidates' .* got numbers"),
    (lambda o: o[1].__setitem__("candidates", ["cat", 0.4]), r":2: 'candidates' .* got numbers"),
    (lambda o: o[4].__setitem__("image", "train/cat/999.png"), r":5: unknown image 'train/cat/999.png'"),
    (lambda o: o[5].__setitem__("image", o[0]["image"]), r":6: image .* listed twice \(first on line 1\)"),
    (lambda o: o[2].pop("image"), r":3: missing key 'image'"),
    (lambda o: o.pop(), r"1 of 18 training images have no line"),
    (lambda o: o[0].__setitem__("scores", {"cat": 1.0}), r":2: 'scores' must be given on every line or on none"),
    (lambda o: [x.__setitem__("scores", {"cat": 1}) for x in o] and o[6]["scores"].__setitem__("cow", 1),
     r":7: unknown class 'cow' in scores"),
    (lambda o: [x.__setitem__("scores", {"cat": 1}) for x in o] and o[6].__setitem__("scores", {"cat": -1}),
     r":7: score of 'cat' must be a finite number >= 0"),
    (lambda o: [x.__setitem__("scores", {"cat": 1}) for x in o] and o[6].__setitem__("scores", {"cat": float("nan")}),
     r":7: score of 'cat' must be a finite number >= 0, got nan"),
    (lambda o: [x.__setitem__("scores", {"cat": 1}) for x in o] and o[6].__setitem__("scores", {"cat": 0}),
     r":7: scores sum to 0"),
])
def test_errors_name_the_line(folder_bundle: Any, tmp_path: Path, edit: Any, match: str) -> None:
    objs: list[Any] = _lines(folder_bundle)
    edit(objs)
    with pytest.raises(ImportFormatError, match=match) as e:
        import_jsonl(_write(tmp_path / "bad.jsonl", objs), folder_bundle)
    assert "\n" not in str(e.value)


def test_missing_file(folder_bundle: Any, tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="cannot read"):
        import_jsonl(tmp_path / "nope.jsonl", folder_bundle)
