"""Import candidate labels made by another model (LLaVA, GPT-4V, a human tool...) from JSON Lines.

One JSON object per line::

    {"image": "train/cat/001.png", "candidates": ["cat", "dog"], "scores": {"cat": 0.7, "dog": 0.3}}

* ``image``: the image's id in the dataset's training split -- the relative path for ``folder:``
  data (as in ``bundle.train.ids``), otherwise the image index, as an int or a string (the id of
  torchvision datasets is the split index; for ``digits`` it is scikit-learn's sample index).
* ``candidates``: a non-empty list of class names (duplicates ignored); numbers (a 0/1 vector,
  probabilities, a ``{name: p}`` mapping) are refused, never thresholded: probabilities go in ``scores``.
* ``scores`` (optional, but then on every line): class name -> non-negative number; missing
  classes score 0 and each row is normalised to sum to 1.

Every training image must appear exactly once. Any problem (malformed JSON, unknown class or
image, an image listed twice or missing, an empty candidate list) is a one-line
:class:`ImportFormatError` naming the line; nothing is written. Blank lines are skipped; other keys
of an object are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from coreg.data.annotations import Annotation, atomic_write_bytes
from coreg.errors import CoregError

logger = logging.getLogger(__name__)


class ImportFormatError(CoregError):
    """A JSONL annotation file is malformed or does not match the dataset."""


def _norm_id(key: str) -> str:
    return str(PurePosixPath(key.replace("\\", "/")))


def _names_hint(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")


def import_jsonl(path: str | Path, bundle: Any, *, source_model: str | None = None) -> Annotation:
    """Read a JSONL annotation for ``bundle``'s training split.

    Args:
        path: the ``.jsonl`` file.
        bundle: a :class:`coreg.data.DataBundle`.
        source_model: the model that made the labels (recorded in the annotator description).

    Returns:
        An annotation with ``annotator={"kind": "import", "source", "source_model", "source_sha256"}``
        and ``scores`` when the file has them.

    Raises:
        ImportFormatError: malformed file or content not matching the dataset (with the line number).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ImportFormatError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None

    classes = list(bundle.classes)
    class_index = {c: k for k, c in enumerate(classes)}
    ids = list(bundle.train.ids)
    id_index = {i: n for n, i in enumerate(ids)}
    id_index.update({_norm_id(i): n for n, i in enumerate(ids) if _norm_id(i) not in id_index})
    n, k = len(ids), len(classes)
    cand = np.zeros((n, k), dtype=bool)
    scores = np.zeros((n, k), dtype=np.float64)
    seen_line = np.zeros(n, dtype=np.int64)  # line number that gave each image, 0 = not yet
    has_scores: bool | None = None

    def fail(lineno: int, msg: str) -> ImportFormatError:
        return ImportFormatError(f"{path}:{lineno}: {msg}")

    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise fail(lineno, f"not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise fail(lineno, f"expected a JSON object, got {type(obj).__name__}")
        if "image" not in obj:
            raise fail(lineno, "missing key 'image'")
        key = obj["image"]
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise fail(lineno, f"'image' must be a string or an integer, got {key!r}")
        skey = str(key)
        row = id_index.get(skey, id_index.get(_norm_id(skey)))
        if row is None:
            raise fail(lineno, f"unknown image {key!r}: not a training image id of {bundle.name} "
                               f"(ids look like {_names_hint(ids[:3])})")
        if seen_line[row]:
            raise fail(lineno, f"image {key!r} is listed twice (first on line {seen_line[row]})")
        seen_line[row] = lineno

        names = obj.get("candidates")
        if isinstance(names, dict) or (isinstance(names, list) and any(isinstance(c, int | float) for c in names)):
            # e.g. {"cat": 0.7, "dog": 0.3} or [0, 1, 0.4]: never guess a threshold to turn numbers into a set
            raise fail(lineno, "'candidates' must be a list of class names, got numbers; give the set as names "
                               "and probabilities as 'scores': {name: p}")
        if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
            raise fail(lineno, "'candidates' must be a list of class names")
        if not names:
            raise fail(lineno, f"empty candidate list for image {key!r}")
        for c in names:
            if c not in class_index:
                raise fail(lineno, f"unknown class {c!r}; valid: {_names_hint(classes)}")
            cand[row, class_index[c]] = True

        line_has = "scores" in obj and obj["scores"] is not None
        if has_scores is None:
            has_scores = line_has
        elif line_has != has_scores:
            raise fail(lineno, "'scores' must be given on every line or on none"
                               + (" (earlier lines have them)" if has_scores else " (earlier lines have none)"))
        if line_has:
            sc = obj["scores"]
            if not isinstance(sc, dict):
                raise fail(lineno, "'scores' must be an object mapping class names to numbers")
            for c, v in sc.items():
                if c not in class_index:
                    raise fail(lineno, f"unknown class {c!r} in scores; valid: {_names_hint(classes)}")
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                    raise fail(lineno, f"score of {c!r} must be a finite number >= 0, got {v!r}")
                scores[row, class_index[c]] = float(v)
            total = scores[row].sum()
            if total <= 0:
                raise fail(lineno, "scores sum to 0; cannot normalise")
            scores[row] /= total

    missing = np.flatnonzero(seen_line == 0)
    if missing.size:
        raise ImportFormatError(f"{path}: {missing.size} of {n} training images have no line "
                                f"(first: {ids[int(missing[0])]!r})")
    if has_scores:
        off = int((~cand[np.arange(n), scores.argmax(1)]).sum())
        if off:
            logger.warning("%s: on %d lines the highest score is not among the candidates", path, off)
    annotator = {"kind": "import", "source": str(path), "source_model": source_model,
                 "source_sha256": hashlib.sha256(raw).hexdigest()}
    return Annotation(candidates=cand, classes=classes, annotator=annotator, data=bundle.describe(),
                      scores=scores.astype(np.float32) if has_scores else None)


def export_jsonl(ann: Annotation, ids: list[str], path: str | Path) -> Path:
    """Write an annotation in the import format (one line per training image, atomically).

    Args:
        ann: the annotation.
        ids: the training split's image ids (``bundle.train.ids``), one per row.
        path: output ``.jsonl`` file.

    Raises:
        ImportFormatError: ``ids`` does not have one entry per row.
    """
    if len(ids) != ann.num_samples:
        raise ImportFormatError(f"{len(ids)} image ids for an annotation of {ann.num_samples} rows")
    lines = []
    for i, image_id in enumerate(ids):
        obj: dict[str, Any] = {"image": image_id,
                               "candidates": [ann.classes[j] for j in np.flatnonzero(ann.candidates[i])]}
        if ann.scores is not None:
            obj["scores"] = {ann.classes[j]: float(ann.scores[i, j]) for j in np.flatnonzero(ann.scores[i] > 0)}
        lines.append(json.dumps(obj, ensure_ascii=False))
    path = Path(path)
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    return path
