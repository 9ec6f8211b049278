"""Evaluation: accuracy, confusion matrices and label-free selection metrics.

Label-free selection (PLENCH, Wang et al., ICLR 2025: "Realistic Evaluation of Deep Partial-Label
Learning Algorithms"; reference code ``plench/lib/misc.py``): on held-out training images that
carry only candidate sets ``S_i``,

* **covering rate** CR = (1/n) sum_i [y_hat_i in S_i], the share of predictions inside the set;
* **approximated accuracy** AA = 1 - (1/n) sum_i sum_{j != y_hat_i} q_ij = (1/n) sum_i q_i,y_hat_i,
  where q_i = softmax(f(x_i)) restricted to S_i and renormalised (q_ij = p_ij [j in S_i] /
  sum_{l in S_i} p_il): the 0-1 risk of the prediction with the unknown true label replaced by
  the model's own confidence over the candidates (PRODEN-style label confidence). It is 0 for a
  prediction outside the set and equals the model's in-set confidence of its prediction
  otherwise, so AA <= CR and it penalises hedging between candidates. It needs the model's
  scores; from hard predictions only (the zero-temperature limit of q) it reduces to CR.
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
    """Share of predictions ``[N]`` (class indices) inside their candidate set ``[N, K]``."""
    if len(pred) == 0:
        return float("nan")
    return float((candidates[torch.arange(len(pred), device=pred.device), pred] > 0).float().mean())


def approximated_accuracy(pred: Tensor, candidates: Tensor) -> float:
    """PLENCH approximated accuracy (module doc): mean in-set confidence of the predicted class.

    Args:
        pred: logits (or any scores that a softmax turns into probabilities) ``[N, K]``; or class
            indices ``[N]``, for which the measure degenerates to :func:`covering_rate`.
        candidates: candidate sets ``[N, K]`` (bool, 0/1 or weights; ``> 0`` is a candidate).

    Returns:
        AA in [0, 1] (NaN for an empty input).
    """
    if pred.ndim == 1:
        return covering_rate(pred, candidates)
    if len(pred) == 0:
        return float("nan")
    probs = torch.softmax(pred.float(), dim=1) * (candidates > 0).float()
    conf = probs / (probs.sum(dim=1, keepdim=True) + 1e-12)
    top = pred.argmax(dim=1)
    return float(conf[torch.arange(len(pred), device=pred.device), top].mean())


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """``[K, K]`` counts, rows = gold, columns = predicted."""
    idx = labels.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()
