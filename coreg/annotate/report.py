"""Figures and tracking of one annotation: set sizes, per-class eta, per-template accuracy.

Figures are built with :class:`matplotlib.figure.Figure` directly (the Agg canvas, no pyplot and
no global backend switch), so they work headless and in worker processes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from coreg.data.annotations import Annotation, annotation_stats

logger = logging.getLogger(__name__)


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def set_size_figure(sizes: np.ndarray, num_classes: int) -> Any:
    """Histogram of candidate-set sizes 1..K."""
    counts = np.bincount(np.asarray(sizes, dtype=np.int64), minlength=num_classes + 1)[1:]
    last = max(1, int(np.flatnonzero(counts).max()) + 1) if counts.any() else 1
    fig = _figure(6, 3.5)
    ax = fig.add_subplot()
    ax.bar(np.arange(1, last + 1), counts[:last], color="#4C72B0")
    ax.set_xlabel("candidate set size |S|")
    ax.set_ylabel("images")
    ax.set_title(f"set sizes (mean {float(np.mean(sizes)) if len(sizes) else 0.0:.3f})")
    return fig


def per_class_eta_figure(per_class: list[dict[str, Any]]) -> Any:
    """Bar chart of eta (share of images whose set misses the gold label) per class."""
    names = [p["class"] for p in per_class]
    etas = [p["eta"] for p in per_class]
    fig = _figure(max(6.0, 0.22 * len(names) + 2), 3.8)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(names)), etas, color="#C44E52")
    ax.set_xticks(np.arange(len(names)))
    ax.set_xticklabels([n[:24] for n in names], rotation=90, fontsize=7 if len(names) > 20 else 9)
    ax.set_ylim(0, 1)
    ax.set_ylabel("eta = P(y not in S)")
    ax.set_title("per-class eta")
    return fig


def per_template_figure(accs: list[float], templates: list[str] | None) -> Any:
    """Horizontal bars of each template's zero-shot top-1 accuracy on the training split."""
    labels = templates or [f"template {i}" for i in range(len(accs))]
    fig = _figure(7, max(3.0, 0.22 * len(accs) + 1))
    ax = fig.add_subplot()
    y = np.arange(len(accs))
    ax.barh(y, accs, color="#55A868")
    ax.set_yticks(y)
    ax.set_yticklabels([t[:48] for t in labels], fontsize=7 if len(accs) > 30 else 9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("train top-1 accuracy")
    ax.set_title("per-template zero-shot accuracy")
    return fig


def log_annotation(tracker: Any, ann: Annotation, *, path: Path | None, gold: np.ndarray | None,
                   metrics: dict[str, float], params: dict[str, Any]) -> None:
    """Log one annotation run: params, metrics, the file, and the three figures.

    Args:
        tracker: a :class:`coreg.tracking.Tracker`.
        ann: the annotation.
        path: the written annotation file (logged as an artifact), or ``None``.
        gold: gold training labels, or ``None`` (then only the set-size histogram is drawn).
        metrics: scalar metrics (``avg_set_size``, ``eta``, zero-shot accuracies).
        params: run parameters.
    """
    tracker.log_params(params)
    tracker.log_metrics(metrics)
    tracker.set_tags({"stage": "annotate", "annotator": ann.annotator.get("kind"),
                      "data_fingerprint": ann.fingerprint or ""})
    stats = annotation_stats(ann, gold)
    tracker.log_figure(set_size_figure(ann.candidates.sum(1), ann.num_classes), "figures/set_size_hist.png")
    if gold is not None:
        tracker.log_figure(per_class_eta_figure(stats["per_class"]), "figures/per_class_eta.png")
        if "per_template_acc" in stats:
            tracker.log_figure(per_template_figure(stats["per_template_acc"], stats.get("templates")),
                               "figures/per_template_acc.png")
    tracker.log_text(json.dumps(ann.annotator, indent=1), "annotator.json")
    tracker.log_text(json.dumps({k: v for k, v in stats.items() if k != "templates"}, indent=1),
                     "annotation_stats.json")
    if path is not None:
        tracker.log_artifact(path, artifact_path="annotation")
