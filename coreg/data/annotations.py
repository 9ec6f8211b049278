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

Writing is atomic (temporary file + ``os.replace``). :meth:`Annotation.check_against` refuses an
annotation made for other data with a one-line error.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreg.errors import CoregError

FORMAT_VERSION = 1


class AnnotationError(CoregError):
    """Invalid annotation content, unreadable file, or annotation for other data."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-directory temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        if self.template_preds is not None:
            self.template_preds = np.asarray(self.template_preds, dtype=np.int16)
            if self.template_preds.ndim != 2 or self.template_preds.shape[0] != self.num_samples:
                raise AnnotationError(f"template_preds must be N x P, got {self.template_preds.shape}")
        if self.test_scores is not None:
            self.test_scores = np.asarray(self.test_scores, dtype=np.float32)
            if self.test_scores.ndim != 2 or self.test_scores.shape[1] != self.num_classes:
                raise AnnotationError(f"test_scores must be N_test x K, got {self.test_scores.shape}")

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
        try:
            with np.load(path, allow_pickle=False) as z:
                if "candidates" not in z.files or "meta" not in z.files:
                    raise AnnotationError(f"{path} is not a coreg annotation file (no candidates/meta arrays)")
                meta = json.loads(str(z["meta"]))
                opt = {k: (z[k] if k in z.files else None) for k in ("scores", "template_preds", "test_scores")}
                cand = z["candidates"]
        except AnnotationError:
            raise
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise AnnotationError(f"cannot read annotation file {path}: {type(e).__name__}: {e}") from None
        return cls(candidates=cand, classes=list(meta["classes"]), annotator=dict(meta["annotator"]),
                   data=dict(meta.get("data", {})), **opt)

    def check_against(self, bundle: Any) -> None:
        """Refuse an annotation made for other data.

        Args:
            bundle: a :class:`coreg.data.DataBundle`.

        Raises:
            AnnotationError: class list, sample count or fingerprint differ.
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
        if fp is not None and fp != bundle.fingerprint:
            raise AnnotationError(
                f"annotation was made for other data (fingerprint {fp}, dataset {bundle.name} has {bundle.fingerprint}; "
                f"annotated data: {self.data.get('name')}, split {self.data.get('split')})"
            )

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
