"""``zero_shot``: the annotator's own predictions, no training (the reference point of every table).

The VLM's zero-shot accuracy on the *test* split needs the annotation's ``test_scores``, which are
not part of :class:`~coreg.methods.base.TrainData` (a method never sees test data). So the
choice is split in two:

* :func:`zero_shot_accuracy` computes the annotator's accuracy from an
  :class:`~coreg.data.Annotation` and a :class:`~coreg.data.DataBundle`: on the test split when
  the annotation carries ``test_scores``, and always on the training split (its single noisy label
  and candidate-set coverage against the gold labels). ``benchmarks/compare.py`` reports this.
* The registered method ``zero_shot`` trains nothing (its only phase has zero batches) and reports
  ``annotator_train_acc`` (single noisy label vs gold) and ``annotator_train_coverage`` (gold in the
  candidate set) from ``on_epoch_end`` when gold labels are known. Its network is an *untrained*
  student created only so that the engine's evaluation, checkpoint and student file keep working;
  the engine's ``test_acc`` for this method is therefore chance level and must not be read as the
  annotator's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from coreg.methods.base import EpochContext, EpochPlan, MethodConfig, StepContext, StepOutput
from coreg.methods.baselines._single_net import PHASE, SingleNetMethod
from coreg.methods.registry import register_method

__all__ = ["ZeroShotConfig", "ZeroShot", "zero_shot_accuracy"]


@dataclass(frozen=True)
class ZeroShotConfig(MethodConfig):
    """No hyper-parameters: the annotator is used as it is."""


def zero_shot_accuracy(annotation: Any, bundle: Any) -> dict[str, float]:
    """The annotator's accuracy, without training anything.

    Args:
        annotation: a :class:`~coreg.data.Annotation` for ``bundle.train``.
        bundle: the :class:`~coreg.data.DataBundle` it annotates.

    Returns:
        ``test_acc`` (argmax of ``test_scores`` vs the test gold labels) when both exist;
        ``annotator_train_acc`` (the single noisy label vs the training gold labels) and
        ``annotator_train_coverage`` (share of rows whose candidate set holds the gold label)
        when training gold labels exist; ``avg_set_size`` always.

    Raises:
        ValueError: the annotation and the dataset disagree in size.
    """
    out: dict[str, float] = {"avg_set_size": float(annotation.candidates.sum(1).mean())}
    gold = bundle.train.labels
    if gold is not None:
        gold = np.asarray(gold, dtype=np.int64)
        if len(gold) != annotation.num_samples:
            raise ValueError(f"annotation has {annotation.num_samples} rows but the training split {len(gold)}")
        out["annotator_train_acc"] = float((annotation.single_labels() == gold).mean())
        out["annotator_train_coverage"] = float(annotation.candidates[np.arange(len(gold)), gold].mean())
    test = bundle.test
    if annotation.test_scores is not None and test is not None and test.labels is not None:
        labels = np.asarray(test.labels, dtype=np.int64)
        if len(labels) != annotation.test_scores.shape[0]:
            raise ValueError(f"test_scores has {annotation.test_scores.shape[0]} rows but the test split {len(labels)}")
        out["test_acc"] = float((annotation.test_scores.argmax(1) == labels).mean())
    return out


@register_method("zero_shot", config=ZeroShotConfig)
class ZeroShot(SingleNetMethod):
    """Trains nothing; reports the annotator's training-split accuracy (see the module docstring)."""

    trains: ClassVar[bool] = False

    def on_epoch_start(self, ctx: EpochContext) -> EpochPlan:
        return EpochPlan(phases={PHASE: []}, lengths={PHASE: 0})

    def step(self, idx: Tensor, ctx: StepContext) -> StepOutput:
        raise RuntimeError("zero_shot has no training steps")

    @torch.no_grad()
    def on_epoch_end(self, ctx: EpochContext) -> dict[str, float]:
        data = ctx.data
        out = {"annotator_avg_set_size": float(data.candidates.sum(1).mean())}
        if data.gold is not None:
            rows = torch.arange(data.num_samples, device=data.device)
            out["annotator_train_acc"] = float((data.noisy_labels == data.gold).float().mean())
            out["annotator_train_coverage"] = float((data.candidates[rows, data.gold] > 0).float().mean())
        return out
