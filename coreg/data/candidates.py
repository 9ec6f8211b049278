"""Synthetic noisy partial labels: the paper's flip protocol and an instance-dependent annotator.

* :func:`flip_candidates` is spec section 2: each wrong class joins the set with probability q,
  then with probability eta the true label is swapped for a uniformly drawn non-candidate.
* :func:`instance_candidates` imitates a pre-trained annotator: several weak scikit-learn
  classifiers, each fitted on a few labelled images and each looking at a different feature view
  of the image, give one top-1 per image; the candidate set is the union of those top-1s (as the
  union of CLIP's per-template top-1s), so errors follow the content of the images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def flip_candidates(labels: np.ndarray, num_classes: int, *, q: float, eta: float, seed: int) -> np.ndarray:
    """Spec section 2 (``--noisy_type flip``), seeded.

    Args:
        labels: gold labels ``(N,)``.
        num_classes: K.
        q: partial rate: each wrong class joins the set independently with probability q.
        eta: noise rate: with probability eta a row's true label is replaced by a non-candidate.
        seed: seed of the numpy generator.

    Returns:
        bool ``(N, K)`` candidate matrix; set sizes are ``1 + Binomial(K-1, q)``.

    Raises:
        ValueError: q or eta outside [0, 1], labels out of range.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"partial rate q must be in [0, 1], got {q}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"noise rate eta must be in [0, 1], got {eta}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    rng = np.random.default_rng(seed)
    n = len(labels)
    rows = np.arange(n)
    cand = rng.random((n, num_classes)) < q
    cand[rows, labels] = True
    # Noise step: rows drawn with probability eta and not already full swap y for a non-candidate.
    noisy = (rng.random(n) <= eta) & (cand.sum(1) < num_classes) if eta > 0 else np.zeros(n, bool)
    keys = rng.random((n, num_classes))
    keys[cand] = -1.0  # only non-candidates can be drawn; uniform among them
    pick = keys.argmax(1)
    idx = rows[noisy]
    cand[idx, labels[idx]] = False
    cand[idx, pick[idx]] = True
    return cand


# --------------------------------------------------------------------------- instance-dependent


def _gray(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    return x.mean(-1) if x.shape[-1] > 1 else x[..., 0]


def _pool(x: np.ndarray, out: int) -> np.ndarray:
    """Average-pool ``(N, H, W)`` to ``(N, out, out)`` (H divisible or cropped)."""
    n, h, w = x.shape
    f = max(1, h // out)
    x = x[:, : f * out, : f * out] if h >= out else x
    if h < out:
        return x.reshape(n, -1)
    return x.reshape(n, out, f, out, f).mean((2, 4)).reshape(n, -1)


def _view_pixels(images: np.ndarray) -> np.ndarray:
    return _pool(_gray(images), 8)


def _view_coarse(images: np.ndarray) -> np.ndarray:
    return _pool(_gray(images), 4)


def _view_gradients(images: np.ndarray) -> np.ndarray:
    """A small HOG: 8 orientation bins over a 4x4 grid of cells."""
    g = _gray(images)
    gy, gx = np.gradient(g, axis=(1, 2))
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 8
    bins = np.minimum(ang.astype(np.int64), 7)
    n, h, w = g.shape
    cell = max(1, h // 4)
    feats = np.zeros((n, 4, 4, 8), dtype=np.float32)
    for b in range(8):
        m = np.where(bins == b, mag, 0.0)[:, : cell * 4, : cell * 4]
        feats[..., b] = m.reshape(n, 4, cell, 4, cell).sum((2, 4))
    feats = feats.reshape(n, -1)
    return feats / (np.linalg.norm(feats, axis=1, keepdims=True) + 1e-6)


def _view_profiles(images: np.ndarray) -> np.ndarray:
    g = _gray(images)
    return np.concatenate([g.mean(1), g.mean(2)], axis=1)


def _view_color(images: np.ndarray) -> np.ndarray:
    x = images.reshape(len(images), -1, images.shape[-1]).astype(np.float32) / 255.0
    hist = [np.stack([np.histogram(row[:, c], bins=8, range=(0, 1))[0] for row in x]) for c in range(x.shape[-1])]
    h = np.concatenate(hist, axis=1).astype(np.float32)
    return np.concatenate([h / h.sum(1, keepdims=True), _pool(_gray(images), 4)], axis=1)


_VIEWS = {"pixels": _view_pixels, "coarse": _view_coarse, "gradients": _view_gradients,
          "profiles": _view_profiles, "color": _view_color}


def _classifiers(seed: int) -> list[tuple[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return [
        ("logreg", make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=300, random_state=seed))),
        ("naive_bayes", GaussianNB()),
        ("knn3", KNeighborsClassifier(n_neighbors=3)),
        ("logreg_c1", make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300, random_state=seed))),
        ("knn1", KNeighborsClassifier(n_neighbors=1)),
    ]


def instance_candidates(
    images: np.ndarray, labels: np.ndarray, num_classes: int, *, shots: int = 5, num_annotators: int = 5,
    seed: int = 0, test_images: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Instance-dependent candidate sets from weak few-shot annotators.

    Each annotator a is a (feature view, classifier) pair fitted on its own ``shots`` images per
    class (drawn with the seeded generator; only these ``shots * K * num_annotators`` gold labels
    are used). Its top-1 on every image is one "template" prediction; the candidate set is the
    union of the annotators' top-1s; the scores are the mean of their predicted probabilities.

    Args:
        images: uint8 ``(N, H, W, C)``.
        labels: gold labels ``(N,)`` (only the few-shot subset is read).
        num_classes: K.
        shots: labelled images per class for each annotator.
        num_annotators: how many weak annotators (1..10).
        seed: seed of the shot sampling and of the classifiers.
        test_images: optional uint8 ``(N_test, H, W, C)``: the same annotators also score them
            (so the annotator's own test accuracy can be reported next to a student's).

    Returns:
        ``(candidates (N, K) bool, scores (N, K) float32, preds (N, A) int16, names, test_scores)``;
        ``test_scores`` is float32 ``(N_test, K)`` or ``None`` without ``test_images``.

    Raises:
        ValueError: bad ``shots``/``num_annotators``, or a class with fewer than ``shots`` images.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    if not 1 <= num_annotators <= 10:
        raise ValueError(f"num_annotators must be in [1, 10], got {num_annotators}")
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=num_classes)
    if counts.min() < shots:
        raise ValueError(f"class {int(counts.argmin())} has {int(counts.min())} images, fewer than shots={shots}")
    rng = np.random.default_rng(seed)
    view_names = ["pixels", "gradients", "coarse", "profiles"] + (["color"] if images.shape[-1] == 3 else [])
    clfs = _classifiers(seed)
    feats_cache: dict[str, np.ndarray] = {}
    n = len(images)
    preds = np.empty((n, num_annotators), dtype=np.int16)
    scores = np.zeros((n, num_classes), dtype=np.float64)
    names = []
    test_scores = None if test_images is None else np.zeros((len(test_images), num_classes), dtype=np.float64)
    test_cache: dict[str, np.ndarray] = {}
    for a in range(num_annotators):
        view = view_names[a % len(view_names)]
        clf_name, clf = clfs[(a * 3 + a // len(view_names)) % len(clfs)]
        if view not in feats_cache:
            feats_cache[view] = _VIEWS[view](images)
        x = feats_cache[view]
        idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), shots, replace=False)
                              for c in range(num_classes)])
        clf.fit(x[idx], labels[idx])
        proba = np.zeros((n, num_classes))
        proba[:, clf.classes_] = clf.predict_proba(x)
        preds[:, a] = proba.argmax(1)
        scores += proba
        if test_scores is not None and test_images is not None:
            if view not in test_cache:
                test_cache[view] = _VIEWS[view](test_images)
            test_scores[:, clf.classes_] += clf.predict_proba(test_cache[view])
        names.append(f"{clf_name}@{view}")
        logger.info("annotator %s: train accuracy %.3f", names[-1], float((preds[:, a] == labels).mean()))
    cand = np.zeros((n, num_classes), dtype=bool)
    cand[np.arange(n)[:, None], preds.astype(np.int64)] = True
    scores /= num_annotators
    if test_scores is not None:
        test_scores = (test_scores / num_annotators).astype(np.float32)
    return cand, scores.astype(np.float32), preds, names, test_scores
