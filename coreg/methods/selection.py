"""Pure maths of Co-Reg's sample selection and self-training targets (spec 3.2, 3.5, 3.6).

Arrays and explicit scalars in, arrays out; no models, no global random state (mixup draws from
a numpy ``Generator`` and a ``torch.Generator`` passed in; the GMM takes a seed).

Deviations from the reference, both for robustness:

* :func:`division_loss` clamps the largest candidate probability below at 1e-12, so the loss is
  at most ~27.6 instead of ``inf`` (an ``inf`` turned into NaN after min-max normalisation and
  crashed the GMM in the reference, spec 3.2).
* :func:`gmm_clean_prob` is seeded (the reference's GMM had ``random_state=None``), and a
  constant input (no spread to split) returns all ones: every sample is in the low-loss mode.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

__all__ = ["sharpen", "sample_mixup", "mixup", "distribution_align", "division_loss", "minmax_normalize",
           "gmm_clean_prob", "co_divide", "class_balanced_selection"]

logger = logging.getLogger(__name__)


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """Temperature sharpening ``p^(1/T) / sum_k p_k^(1/T)`` along the last dimension.

    Args:
        p: probabilities ``[..., K]``.
        T: temperature (0.5 squares and renormalises).

    Returns:
        Tensor like ``p``; rows sum to 1 and keep their argmax.

    Raises:
        ValueError: ``T <= 0``.
    """
    if T <= 0:
        raise ValueError(f"sharpening temperature must be > 0, got {T}")
    pt = p.pow(1.0 / T)
    return pt / pt.sum(dim=-1, keepdim=True)


def sample_mixup(
    n: int, *, alpha: float, rng: np.random.Generator, generator: torch.Generator
) -> tuple[float, torch.Tensor]:
    """Draw one mixup coefficient and one permutation (spec 3.6).

    Args:
        n: number of rows M to permute.
        alpha: Beta(alpha, alpha) parameter (4 in the reference).
        rng: numpy generator for lambda.
        generator: torch generator for the permutation (its device decides the result's).

    Returns:
        ``(lam, perm)`` with ``lam = max(l, 1 - l)`` in [0.5, 1], ``perm`` a long ``[n]``.

    Raises:
        ValueError: ``alpha <= 0`` or ``n < 0``.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return lam, perm


def mixup(x: torch.Tensor, targets: torch.Tensor, *, lam: float, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix rows with their permuted partners: ``lam a + (1 - lam) a[perm]`` for inputs and targets.

    Args:
        x: inputs ``[M, ...]``.
        targets: soft targets ``[M, K]``.
        lam: mixup coefficient.
        perm: permutation ``[M]`` (the same one for inputs and targets).

    Returns:
        ``(mixed_x, mixed_targets)``.

    Raises:
        ValueError: lengths disagree.
    """
    m = x.shape[0]
    if targets.shape[0] != m or tuple(perm.shape) != (m,):
        raise ValueError(f"x, targets and perm need the same length, got {m}, {targets.shape[0]}, {tuple(perm.shape)}")
    idx_x = perm.to(x.device)
    idx_t = perm.to(targets.device)
    return lam * x + (1.0 - lam) * x[idx_x], lam * targets + (1.0 - lam) * targets[idx_t]


def distribution_align(
    probs: torch.Tensor, memory: torch.Tensor, index: torch.Tensor, prior: torch.Tensor
) -> torch.Tensor:
    """Distribution alignment with a running prediction memory (spec 3.2 step 2).

    First writes ``memory[index] = probs`` (in place), *then* takes the column mean ``m`` of the
    whole memory, and returns ``normalise(probs * prior / m)``.

    Args:
        probs: current predictions ``[B, K]``.
        memory: prediction memory D ``[N, K]`` (modified in place).
        index: dataset indices of the batch ``[B]`` (long).
        prior: class prior ``[K]`` (its scale does not matter).

    Returns:
        Aligned distributions ``[B, K]``; rows sum to 1.

    Raises:
        ValueError: shapes disagree.
    """
    if probs.dim() != 2 or memory.dim() != 2 or probs.shape[1] != memory.shape[1]:
        raise ValueError(f"probs [B, K] and memory [N, K] disagree: {tuple(probs.shape)}, {tuple(memory.shape)}")
    if tuple(index.shape) != (probs.shape[0],) or tuple(prior.shape) != (probs.shape[1],):
        raise ValueError(f"index must be [{probs.shape[0]}] and prior [{probs.shape[1]}], "
                         f"got {tuple(index.shape)}, {tuple(prior.shape)}")
    with torch.no_grad():
        memory[index.to(memory.device)] = probs.detach().to(memory.dtype)
        mean = memory.mean(dim=0).to(probs.device, probs.dtype)
    aligned = probs * prior.to(probs.device, probs.dtype) / mean
    return aligned / aligned.sum(dim=1, keepdim=True)


def division_loss(aligned: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``-log max_j (aligned_ij * Y_ij)``, the max clamped below at 1e-12 (always finite).

    Args:
        aligned: aligned probabilities ``[N, K]``.
        candidates: candidate matrix ``[N, K]`` (0/1 or soft ``kd`` weights).

    Returns:
        Losses ``[N]`` in ``[0, -log 1e-12]``.

    Raises:
        ValueError: shapes disagree.
    """
    if aligned.dim() != 2 or candidates.shape != aligned.shape:
        raise ValueError(f"aligned and candidates must both be [N, K], got {tuple(aligned.shape)}, "
                         f"{tuple(candidates.shape)}")
    best = (aligned * candidates.to(aligned.dtype)).amax(dim=1)
    return -torch.log(best.clamp(min=1e-12))


def minmax_normalize(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (max - min)`` as float64; a constant input gives zeros.

    Raises:
        ValueError: empty or non-finite input.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        raise ValueError("cannot normalise an empty array")
    if not np.isfinite(x).all():
        raise ValueError("losses must be finite")
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def gmm_clean_prob(
    x: np.ndarray, *, seed: int, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4
) -> np.ndarray:
    """Posterior of the lower-mean component of a two-component 1-D Gaussian mixture.

    scikit-learn ``GaussianMixture`` with the reference's settings (k-means init, one init) plus
    ``random_state=seed``. ``ConvergenceWarning`` at ``max_iter=10`` is expected and silenced.

    Args:
        x: values ``[N]`` (averaged normalised losses).
        seed: ``random_state`` of the mixture.
        max_iter: EM iterations.
        tol: EM tolerance.
        reg_covar: variance floor.

    Returns:
        Clean probabilities ``[N]`` in [0, 1] (all ones for a constant input).

    Raises:
        ValueError: fewer than 2 values or non-finite values.
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    if x.size < 2:
        raise ValueError(f"need at least 2 values to fit a 2-component mixture, got {x.size}")
    if not np.isfinite(x).all():
        raise ValueError("GMM input must be finite")
    if x.max() == x.min():
        logger.warning("co-divide input is constant; treating every sample as clean")
        return np.ones_like(x)
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x.reshape(-1, 1))
        post = gmm.predict_proba(x.reshape(-1, 1))
    clean = post[:, int(np.argmin(gmm.means_.reshape(-1)))]
    return np.clip(clean, 0.0, 1.0)


def co_divide(losses: np.ndarray, history: list[np.ndarray], *, seed: int, window: int = 5,
              groups: np.ndarray | None = None, min_group: int = 20) -> np.ndarray:
    """One network's division (spec 3.2): normalise, append to history, average, fit the GMM.

    Args:
        losses: division losses ``[N]`` of the whole training set.
        history: previous normalised loss vectors; **mutated**: the new vector is appended and
            only the last ``window`` entries are kept.
        seed: GMM seed.
        window: number of epochs averaged (5).
        groups: optional group id per sample ``[N]`` (e.g. the pseudo-label): one mixture is fitted
            per group, so a class whose losses are all higher than the others' (a hard class early
            in training) is split by its own clean/noisy modes instead of being sent wholesale to
            the noisy side. Groups smaller than ``min_group`` keep the global mixture's values.
        min_group: smallest group fitted on its own.

    Returns:
        Clean probabilities w ``[N]`` in [0, 1]; the split is ``P = {w > threshold}``.

    Raises:
        ValueError: ``window < 1``, non-finite losses, or a history of another length.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    norm = minmax_normalize(np.asarray(losses).reshape(-1))
    if any(np.shape(h) != norm.shape for h in history):
        raise ValueError(f"history entries must all have shape {norm.shape}")
    history.append(norm)
    del history[:-window]
    averaged = np.mean(np.stack(history), axis=0)
    w = gmm_clean_prob(averaged, seed=seed)
    if groups is None:
        return w
    groups = np.asarray(groups).reshape(-1)
    if groups.shape != norm.shape:
        raise ValueError(f"groups must have shape {norm.shape}, got {groups.shape}")
    for g in np.unique(groups):
        members = np.flatnonzero(groups == g)
        if len(members) >= max(2, min_group):
            w[members] = gmm_clean_prob(averaged[members], seed=seed)
    return w


def class_balanced_selection(w: np.ndarray, groups: np.ndarray, scores: np.ndarray, *, threshold: float,
                             num_groups: int, min_ratio: float) -> np.ndarray:
    """The labelled set ``{w > threshold}``, topped up so that no group is starved.

    Each group g (e.g. a pseudo-label) keeps at least ``min_ratio * rate * |G_g|`` samples, where
    ``rate = |P| / N`` is the overall labelled share; missing samples are taken from the group's
    highest ``scores`` (e.g. the clean probability or the negative loss). Without this, the GMM of
    a still-weak network sends almost all samples of a hard class to U, and self-training on
    pseudo-labels then forgets the class (the collapse measured in NOTES).

    Args:
        w: clean probabilities ``[N]``.
        groups: group id per sample ``[N]`` in ``[0, num_groups)``.
        scores: ranking within a group ``[N]`` (higher = more likely clean).
        threshold: the division threshold.
        num_groups: number of groups.
        min_ratio: in [0, 1]; 0 keeps the plain threshold split.

    Returns:
        Boolean mask ``[N]`` of the labelled set (a superset of ``w > threshold``).

    Raises:
        ValueError: shapes disagree or ``min_ratio`` outside [0, 1].
    """
    w = np.asarray(w).reshape(-1)
    groups = np.asarray(groups).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if not (w.shape == groups.shape == scores.shape):
        raise ValueError(f"w, groups and scores must have the same shape, got {w.shape}, {groups.shape}, {scores.shape}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio}")
    labelled = w > threshold
    if min_ratio == 0 or len(w) == 0:
        return labelled
    rate = labelled.mean()
    for g in range(num_groups):
        members = np.flatnonzero(groups == g)
        need = int(np.ceil(min_ratio * rate * len(members))) - int(labelled[members].sum())
        if need <= 0:
            continue
        free = members[~labelled[members]]
        order = free[np.argsort(-scores[free], kind="stable")]
        labelled[order[:need]] = True
    return labelled
