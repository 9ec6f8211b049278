"""The annotation file: candidate-label sets bound to one dataset.

Format: a ``.npz`` archive with

* ``candidates``: bool ``(N, K)``, the candidate sets (every row non-empty);
* ``scores`` (optional): float32 ``(N, K)``, the annotator's mean class probabilities
  (soft labels for knowledge distillation; rows sum to 1);
* ``template_preds`` (optional): int16 ``(N, P)``, each prompt template's top-1 class;
* ``test_scores`` (optional): float32 ``(N_test, K)``, the annotator's scores on the test split
  (for the zero-shot baseline);
* ``meta``: a JSON string: class names, annotator description (kind, model, templates, mode,
  seed, ...), the dataset description (name, split, fingerprints), format version.

A file written outside coreg must still be bound to its images: either ``data.fingerprint`` (as
every coreg-written file has) or ``data.ids``, the training image ids (``bundle.train.ids``) in row
order. Without either, a permuted row order could not be detected, so the file is refused (use
``coreg import`` with a JSONL keyed by image id instead). Candidates must be 0/1 or bool (a matrix
of probabilities is refused, not booleanised: those go in ``scores``); scores must be finite and
non-negative with no all-zero row.

Writing is atomic (temporary file + ``os.replace``). :meth:`Annotation.check_against` refuses an
annotation made for other data with a one-line error.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreg._fs import atomic_write_bytes
from coreg.errors import CoregError

FORMAT_VERSION = 1


class AnnotationError(CoregError):
    """Invalid annotation content, unreadable file, or annotation for other data."""


def _check_scores(scores: np.ndarray, name: str) -> None:
    """Scores are finite, >= 0, and no row is all zero (soft labels divide by the row sum)."""
    bad = ~np.isfinite(scores).all(1)
    if bad.any():
        raise AnnotationError(f"{name} hold NaN or inf in {int(bad.sum())} rows (first: row {int(np.argmax(bad))}); "
                              "the annotator's output is broken: fix or drop the scores")
    if (scores < 0).any():
        i = int(np.argmax((scores < 0).any(1)))
        raise AnnotationError(f"{name} hold negative values (first: row {i}); scores are probabilities")
    zero = scores.sum(1) <= 0
    if zero.any():
        raise AnnotationError(f"{name} sum to 0 in {int(zero.sum())} rows (first: row {int(np.argmax(zero))})")


@dataclass
class Annotation:
    """Candidate sets plus optional scores, bound to a dataset by fingerprint.

    Attributes:
        candidates: bool ``(N, K)``.
        classes: the K class names, in label order.
        annotator: description of who made the sets (``kind`` is required: ``clip``, ``flip``,
            ``instance``, ``import``...).
        data: description of the dataset (:meth:`coreg.data.DataBundle.describe`).
        scores: float32 ``(N, K)`` mean class probabilities, or ``None``.
        template_preds: int16 ``(N, P)`` per-template top-1, or ``None``.
        test_scores: float32 ``(N_test, K)`` annotator scores on the test split, or ``None``.
    """

    candidates: np.ndarray
    classes: list[str]
    annotator: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    scores: np.ndarray | None = None
    template_preds: np.ndarray | None = None
    test_scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        c = np.asarray(self.candidates)
        if c.ndim != 2:
            raise AnnotationError(f"candidate matrix must be 2-D (N x K), got shape {c.shape}")
        if c.shape[1] != len(self.classes):
            raise AnnotationError(f"candidate matrix has {c.shape[1]} columns but {len(self.classes)} class names")
        if c.dtype != bool:
            # A float matrix of probabilities would be booleanised silently (every non-zero -> True).
            if not np.issubdtype(c.dtype, np.number):
                raise AnnotationError(f"candidate matrix must be 0/1 or bool, got dtype {c.dtype}")
            off = np.argwhere(~np.isin(c, (0, 1)))
            if off.size:
                i, j = (int(v) for v in off[0])
                raise AnnotationError(
                    f"candidate matrix holds values other than 0 and 1 in {len(off)} cells (first: {c[i, j]!r} at row "
                    f"{i}, column {j}); candidates are sets (0/1): store probabilities as 'scores'")
        self.candidates = c.astype(bool)
        empty = np.flatnonzero(~self.candidates.any(1))
        if empty.size:
            raise AnnotationError(f"{empty.size} empty candidate rows (first: row {int(empty[0])}); every image needs a candidate")
        if "kind" not in self.annotator:
            raise AnnotationError("annotator description needs a 'kind'")
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32)
            if self.scores.shape != self.candidates.shape:
                raise AnnotationError(f"scores shape {self.scores.shape} != candidates shape {self.candidates.shape}")
            _check_scores(self.scores, "scores")
        if self.template_preds is not None:
            self.template_preds = np.asarray(self.template_preds, dtype=np.int16)
            if self.template_preds.ndim != 2 or self.template_preds.shape[0] != self.num_samples:
                raise AnnotationError(f"template_preds must be N x P, got {self.template_preds.shape}")
        if self.test_scores is not None:
            self.test_scores = np.asarray(self.test_scores, dtype=np.float32)
            if self.test_scores.ndim != 2 or self.test_scores.shape[1] != self.num_classes:
                raise AnnotationError(f"test_scores must be N_test x K, got {self.test_scores.shape}")
            _check_scores(self.test_scores, "test_scores")

    @property
    def num_samples(self) -> int:
        return int(self.candidates.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.candidates.shape[1])

    @property
    def fingerprint(self) -> str | None:
        return self.data.get("fingerprint")

    def single_labels(self, *, seed: int = 0) -> np.ndarray:
        """One noisy label per image ``(N,)`` int64: argmax of the scores when present, else the
        majority of the per-template top-1s (ties to the lowest index), else a candidate drawn
        uniformly with a seeded generator (taking the lowest-index candidate would bias the labels
        towards low class indices)."""
        if self.scores is not None:
            return self.scores.argmax(1).astype(np.int64)
        if self.template_preds is not None:
            votes = np.zeros(self.candidates.shape, dtype=np.int64)
            np.add.at(votes, (np.arange(self.num_samples)[:, None], self.template_preds.astype(np.int64)), 1)
            return votes.argmax(1).astype(np.int64)
        keys = np.random.default_rng(seed).random(self.candidates.shape)
        return np.where(self.candidates, keys, -1.0).argmax(1).astype(np.int64)

    def soft_labels(self) -> np.ndarray:
        """Soft targets ``(N, K)``: the scores, else the uniform distribution over candidates."""
        if self.scores is not None:
            s = self.scores.astype(np.float64)
            return (s / s.sum(1, keepdims=True)).astype(np.float32)
        c = self.candidates.astype(np.float32)
        return c / c.sum(1, keepdims=True)

    # ----------------------------------------------------------------- I/O

    def save(self, path: str | Path) -> Path:
        """Write atomically to ``path`` (``.npz``). Returns the path."""
        meta = {
            "format_version": FORMAT_VERSION,
            "classes": list(self.classes),
            "annotator": self.annotator,
            "data": self.data,
        }
        arrays: dict[str, np.ndarray] = {"candidates": self.candidates, "meta": np.array(json.dumps(meta))}
        for name in ("scores", "template_preds", "test_scores"):
            v = getattr(self, name)
            if v is not None:
                arrays[name] = v
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Annotation:
        """Read an annotation file.

        Raises:
            AnnotationError: missing, unreadable or not an annotation file.
        """
        path = Path(path)
        if not path.exists():
            raise AnnotationError(f"annotation file {path} does not exist")
        if path.is_dir():
            raise AnnotationError(f"annotation file {path} is a directory")
        if path.stat().st_size == 0:
            raise AnnotationError(f"annotation file {path} is empty (an interrupted copy?)")
        try:
            with np.load(path, allow_pickle=False) as z:
                if "candidates" not in z.files or "meta" not in z.files:
                    raise AnnotationError(f"{path} is not a coreg annotation file (no candidates/meta arrays)")
                meta = json.loads(str(z["meta"]))
                opt = {k: (z[k] if k in z.files else None) for k in ("scores", "template_preds", "test_scores")}
                cand = z["candidates"]
            classes, annotator, data = list(meta["classes"]), dict(meta["annotator"]), dict(meta.get("data") or {})
        except AnnotationError:
            raise
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            # truncated or corrupt archives raise BadZipFile / zlib.error / EOFError, bad meta KeyError/TypeError
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise AnnotationError(f"cannot read annotation file {path} (truncated or not a coreg annotation): "
                                  f"{type(e).__name__}: {detail}") from None
        return cls(candidates=cand, classes=classes, annotator=annotator, data=data, **opt)

    def check_against(self, bundle: Any) -> None:
        """Refuse an annotation made for other data.

        Args:
            bundle: a :class:`coreg.data.DataBundle`.

        An annotation without a fingerprint is accepted only with per-row image ids
        (``data["ids"]``) equal to ``bundle.train.ids`` in order.

        Raises:
            AnnotationError: class list, sample count or fingerprint differ; no fingerprint and no
                ids, or ids in another order or of other images.
        """
        if list(self.classes) != list(bundle.classes):
            raise AnnotationError(
                f"annotation classes {self._short(self.classes)} differ from dataset {bundle.name} classes "
                f"{self._short(bundle.classes)}"
            )
        if self.num_samples != len(bundle.train):
            raise AnnotationError(
                f"annotation has {self.num_samples} rows but dataset {bundle.name} has {len(bundle.train)} training images"
            )
        fp = self.fingerprint
        if fp is not None:
            if fp != bundle.fingerprint:
                raise AnnotationError(
                    f"annotation was made for other data (fingerprint {fp}, dataset {bundle.name} has "
                    f"{bundle.fingerprint}; annotated data: {self.data.get('name')}, split {self.data.get('split')})"
                )
            return
        ids = self.data.get("ids")
        if ids is None:
            # Without a fingerprint nothing ties row i to image i: a permuted row order would train on
            # wrong labels silently. Every file coreg writes has one; a hand-made file needs ids.
            raise AnnotationError(
                f"annotation has no dataset fingerprint, so its row order cannot be checked against {bundle.name}; "
                "write it with `coreg import` (JSONL keyed by image id), or store the training image ids in row "
                "order as meta data.ids"
            )
        ids = [str(i) for i in ids]
        want = list(bundle.train.ids)
        if ids != want:
            if sorted(ids) == sorted(want):
                row = next(i for i, (a, b) in enumerate(zip(ids, want)) if a != b)
                raise AnnotationError(f"annotation rows are in another order than {bundle.name}'s training images "
                                      f"(row {row} is image {ids[row]!r}, the dataset's row {row} is {want[row]!r})")
            unknown = sorted(set(ids) - set(want))
            raise AnnotationError(f"annotation image ids do not match {bundle.name}'s training images "
                                  f"({len(unknown)} unknown, e.g. {unknown[:1]})")

    @staticmethod
    def _short(names: list[str]) -> str:
        return str(list(names)[:4])[:-1] + (", ...]" if len(names) > 4 else "]")


def load_annotation_for(path: str | Path, bundle: Any) -> Annotation:
    """Load ``path`` and check it belongs to ``bundle``."""
    ann = Annotation.load(path)
    ann.check_against(bundle)
    return ann


def annotation_stats(ann: Annotation, gold: np.ndarray | None = None) -> dict[str, Any]:
    """Average set size, eta (share of rows whose set misses the gold label), per-class numbers.

    Returns:
        ``avg_set_size``, ``set_size_hist`` (counts of sizes 1..K), and when ``gold`` is given:
        ``eta``, ``single_label_acc`` (accuracy of :meth:`Annotation.single_labels`),
        ``per_class`` (list of {class, n, avg_set_size, eta}) and ``per_template_acc`` when present.
    """
    c = ann.candidates
    sizes = c.sum(1)
    out: dict[str, Any] = {
        "num_samples": ann.num_samples,
        "num_classes": ann.num_classes,
        "avg_set_size": float(sizes.mean()),
        "set_size_hist": np.bincount(sizes, minlength=ann.num_classes + 1)[1:].tolist(),
        "annotator": ann.annotator.get("kind"),
    }
    if gold is not None:
        gold = np.asarray(gold, dtype=np.int64)
        hit = c[np.arange(len(gold)), gold]
        out["eta"] = float(1.0 - hit.mean())
        out["single_label_acc"] = float((ann.single_labels() == gold).mean())
        per = []
        for k, name in enumerate(ann.classes):
            m = gold == k
            per.append({"class": name, "n": int(m.sum()),
                        "avg_set_size": float(sizes[m].mean()) if m.any() else float("nan"),
                        "eta": float(1.0 - hit[m].mean()) if m.any() else float("nan")})
        out["per_class"] = per
        if ann.template_preds is not None:
            tp = ann.template_preds.astype(np.int64)
            out["per_template_acc"] = (tp == gold[:, None]).mean(0).tolist()
            templates = ann.annotator.get("templates_list")
            if templates:
                out["templates"] = list(templates)
    return out
