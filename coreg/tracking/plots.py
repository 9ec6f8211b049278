"""Figures logged as run artifacts (matplotlib, Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_curves(history: Sequence[dict[str, float]], *, reference: float | None = None,
                    reference_label: str = "annotator") -> Any:
    """Test accuracy per epoch of each network and of the ensemble (and the annotator's level)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = sorted({k for h in history for k in h if k.startswith("test_acc") or k in ("val_approx_acc", "val_acc")})
    for k in keys:
        ax.plot([i for i, h in enumerate(history) if k in h], [h[k] for h in history if k in h], label=k,
                lw=2 if k == "test_acc" else 1)
    if reference is not None:
        ax.axhline(reference, ls="--", c="grey", label=reference_label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_figure(cm: np.ndarray, classes: Sequence[str]) -> Any:
    """Row-normalised confusion matrix (rows = gold)."""
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(min(12, 1 + 0.5 * k), min(12, 1 + 0.5 * k)))
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        ax.set_xticks(range(k), [c[:14] for c in classes], rotation=90, fontsize=7)
        ax.set_yticks(range(k), [c[:14] for c in classes], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    fig.tight_layout()
    return fig


def bar_chart(values: Sequence[float], labels: Sequence[str], *, title: str, ylabel: str) -> Any:
    """A simple bar chart (per-class eta, per-template accuracy...)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(values)), 4))
    ax.bar(range(len(values)), values)
    if len(labels) <= 60:
        ax.set_xticks(range(len(values)), [lbl[:18] for lbl in labels], rotation=90, fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    fig.tight_layout()
    return fig
