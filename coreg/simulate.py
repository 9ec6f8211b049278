"""Build an :class:`~coreg.data.Annotation` from a synthetic generator (flip or instance)."""

from __future__ import annotations

from coreg.data.annotations import Annotation
from coreg.data.candidates import flip_candidates, instance_candidates
from coreg.data.datasets import DataBundle
from coreg.errors import CoregError


def simulate_annotation(
    bundle: DataBundle, *, kind: str, q: float = 0.1, eta: float = 0.2, shots: int = 2, annotators: int = 3,
    seed: int = 0,
) -> Annotation:
    """Synthetic candidate sets for ``bundle``'s training split.

    Args:
        bundle: a dataset with gold training labels.
        kind: ``flip`` (spec section 2) or ``instance`` (weak few-shot annotators).
        q, eta: partial and noise rate of ``flip``.
        shots, annotators: few-shot size and number of weak annotators of ``instance``.
        seed: generator seed.

    Raises:
        CoregError: unknown kind, no gold labels, or a rate out of range.
    """
    y = bundle.train.labels
    if y is None:
        raise CoregError(f"dataset {bundle.name} has no gold labels; synthetic labels need them")
    k = bundle.num_classes
    try:
        if kind == "flip":
            cand = flip_candidates(y, k, q=q, eta=eta, seed=seed)
            return Annotation(candidates=cand, classes=bundle.classes, data=bundle.describe(),
                              annotator={"kind": "flip", "q": q, "eta": eta, "seed": seed})
        if kind == "instance":
            test = bundle.test.images if bundle.test is not None else None
            cand, scores, preds, names, test_scores = instance_candidates(
                bundle.train.images, y, k, shots=shots, num_annotators=annotators, seed=seed, test_images=test)
            return Annotation(candidates=cand, classes=bundle.classes, data=bundle.describe(), scores=scores,
                              template_preds=preds, test_scores=test_scores,
                              annotator={"kind": "instance", "shots": shots, "annotators": annotators,
                                         "seed": seed, "templates_list": names})
    except ValueError as e:
        if isinstance(e, CoregError):
            raise
        raise CoregError(str(e)) from None
    raise CoregError(f"unknown simulation kind {kind!r}; valid: flip, instance")
