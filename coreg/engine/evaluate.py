"""Evaluation: accuracy, confusion matrices and label-free selection metrics.

Label-free selection (PLENCH, Wang et al., ICLR 2025: "Realistic Evaluation of Deep Partial-Label
Learning Algorithms"): on held-out training images that carry only candidate sets,

* **covering rate** CR = share of predictions inside the candidate set;
* **approximated accuracy** AA: if a wrong prediction lands in a candidate set as often as a
  random wrong class does, then CR = acc + (1 - acc) * r with r = (mean |S| - 1) / (K - 1), the
  average share of wrong classes that are candidates, so acc = (CR - r) / (1 - r) (clipped to
  [0, 1]). It ranks models like CR but is on the accuracy scale, and it corrects for large sets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn


@torch.no_grad()
def predict_logits(module: nn.Module, images: Tensor, *, transform: Callable[[Tensor], Tensor], batch_size: int = 512,
                   autocast: bool = False) -> Tensor:
    """Logits ``[N, K]`` (float32, on ``images.device``) of an eval module over uint8 images."""
    was = module.training
    module.eval()
    outs = []
    dev = images.device
    for start in range(0, len(images), batch_size):
        x = transform(images[start: start + batch_size])
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=autocast):
            out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        outs.append(out.float())
    module.train(was)
    if not outs:
        return torch.empty(0, 0, device=dev)
    return torch.cat(outs)


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Share of ``pred == labels``."""
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


def covering_rate(pred: Tensor, candidates: Tensor) -> float:
    """Share of predictions inside their candidate set."""
    if len(pred) == 0:
        return float("nan")
    return float((candidates[torch.arange(len(pred), device=pred.device), pred] > 0).float().mean())


def approximated_accuracy(pred: Tensor, candidates: Tensor) -> float:
    """Covering rate corrected for the chance that a wrong prediction is a candidate (module doc)."""
    cr = covering_rate(pred, candidates)
    k = candidates.shape[1]
    if k < 2 or cr != cr:
        return cr
    r = (float((candidates > 0).float().sum(1).mean()) - 1.0) / (k - 1)
    if r >= 1.0:
        return float("nan")
    return float(np.clip((cr - r) / (1 - r), 0.0, 1.0))


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = gold, columns = predicted."""
    idx = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()
