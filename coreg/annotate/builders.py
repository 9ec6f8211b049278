"""Candidate-set builders (spec 1.4): probability tensors in, bool ``[N, K]`` candidate sets out.

Each builder is a pure function registered by name (STYLE section 2)::

    @register_builder("topk", params={"k": 5})
    def topk(mean_probs, template_top1, *, k): ...

and receives

* ``mean_probs``: float ``[N, K]``, A = the template-averaged class probabilities;
* ``template_top1``: int ``[N, P]``, each template's arg-max class (ties to the lowest index).

Every builder guarantees: no empty row, and the arg-max of A (lowest index on ties) is always a
candidate -- for ``multi_prompt`` every template's arg-max is. Registered modes:

========================  ======================================================================
``multi_prompt``          union over templates of the per-template arg-max (the paper's mode)
``topk``                  the ``k`` largest entries of A (stable: ties to the lower index)
``prob_ratio``            among the top ``k`` of A, classes with ``A_ij >= threshold * max_c A_ic``
``prob_thres``            classes with ``A_ij >= threshold``, plus the arg-max
``accu_prob_thres``       the smallest top set of A whose cumulative probability reaches ``threshold``
========================  ======================================================================

Raising ``threshold`` never adds labels for ``prob_ratio``/``prob_thres``, and never removes labels
for ``accu_prob_thres`` (a larger mass needs more classes). The soft ``kd`` target of spec 1.4 is
not a builder: it is A itself, stored as the annotation's ``scores``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from coreg.errors import CoregError


class BuilderError(CoregError):
    """Unknown builder name or invalid builder parameter (a ``ValueError``)."""


BuilderFn = Callable[..., Tensor]


@dataclass(frozen=True)
class BuilderInfo:
    """A registered builder: its function and parameter defaults."""

    name: str
    fn: BuilderFn
    defaults: dict[str, float | int] = field(default_factory=dict)


_BUILDERS: dict[str, BuilderInfo] = {}


def register_builder(name: str, *, params: dict[str, float | int] | None = None) -> Callable[[BuilderFn], BuilderFn]:
    """Register a candidate builder under ``name``.

    Args:
        name: lowercase registry key.
        params: the builder's keyword parameters and their defaults (``k``, ``threshold``).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def deco(fn: BuilderFn) -> BuilderFn:
        if name in _BUILDERS:
            raise ValueError(f"candidate builder {name!r} registered twice")
        _BUILDERS[name] = BuilderInfo(name=name, fn=fn, defaults=dict(params or {}))
        return fn

    return deco


def list_builders(pattern: str | None = None) -> list[str]:
    """Registered builder names, optionally filtered by a shell-style ``pattern``."""
    names = sorted(_BUILDERS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def builder_defaults(name: str) -> dict[str, float | int]:
    """Parameter defaults of builder ``name`` (empty for parameter-free builders)."""
    return dict(_info(name).defaults)


def _info(name: str) -> BuilderInfo:
    if name not in _BUILDERS:
        raise BuilderError(f"unknown candidate mode {name!r}; valid: {', '.join(list_builders())}")
    return _BUILDERS[name]


def _check_param(mode: str, key: str, value: Any) -> float | int:
    if key == "k":
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise BuilderError(f"mode {mode}: k must be a positive integer, got {value!r}")
        return int(value)
    if key == "threshold":
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not 0.0 < value <= 1.0:
            raise BuilderError(f"mode {mode}: threshold must be in (0, 1], got {value!r}")
        return float(value)
    return value  # pragma: no cover - only k/threshold are registered


@dataclass(frozen=True)
class CandidateBuilder:
    """A builder with its parameters bound; call it on ``(mean_probs, template_top1)``.

    Attributes:
        name: registry key.
        params: the resolved parameters (defaults filled in), e.g. ``{"k": 5}``.
    """

    name: str
    params: dict[str, float | int]
    fn: BuilderFn

    def __call__(self, mean_probs: Tensor, template_top1: Tensor) -> Tensor:
        """Build candidate sets.

        Args:
            mean_probs: ``[N, K]`` template-averaged probabilities A.
            template_top1: ``[N, P]`` per-template arg-max class indices.

        Returns:
            bool ``[N, K]``; every row non-empty and holding ``argmax(A)``.
        """
        mean_probs = torch.as_tensor(mean_probs)
        template_top1 = torch.as_tensor(template_top1).long()
        if mean_probs.ndim != 2 or template_top1.ndim != 2 or template_top1.shape[0] != mean_probs.shape[0]:
            raise BuilderError(f"expected mean_probs [N, K] and template_top1 [N, P], got "
                               f"{tuple(mean_probs.shape)} and {tuple(template_top1.shape)}")
        return self.fn(mean_probs, template_top1, **self.params)


def create_builder(name: str, **params: Any) -> CandidateBuilder:
    """Bind builder ``name`` to ``params``; ``None`` values take the default.

    Raises:
        BuilderError: unknown name, a parameter the mode does not take, or an invalid value.
    """
    info = _info(name)
    given = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(given) - set(info.defaults))
    if unknown:
        takes = ", ".join(sorted(info.defaults)) or "no parameters"
        raise BuilderError(f"mode {name} does not take {', '.join(unknown)} (it takes {takes})")
    resolved = {k: _check_param(name, k, given.get(k, d)) for k, d in info.defaults.items()}
    return CandidateBuilder(name=name, params=resolved, fn=info.fn)


def build_candidates(name: str, *, template_probs: Tensor | None = None, mean_probs: Tensor | None = None,
                     template_top1: Tensor | None = None, **params: Any) -> Tensor:
    """Convenience: derive the builder inputs from per-template probabilities and build.

    Args:
        name: builder name.
        template_probs: ``[P, N, K]`` per-template probabilities (gives A and the top-1s).
        mean_probs: ``[N, K]`` A, if ``template_probs`` is not given.
        template_top1: ``[N, P]`` per-template arg-maxes, if ``template_probs`` is not given.
        **params: builder parameters.

    Raises:
        BuilderError: missing inputs or invalid parameters.
    """
    if template_probs is not None:
        template_probs = torch.as_tensor(template_probs)
        mean_probs = template_probs.mean(0) if mean_probs is None else mean_probs
        template_top1 = template_probs.argmax(-1).T if template_top1 is None else template_top1
    if mean_probs is None:
        raise BuilderError("build_candidates needs template_probs or mean_probs")
    if template_top1 is None:
        template_top1 = torch.as_tensor(mean_probs).argmax(-1, keepdim=True)
    return create_builder(name, **params)(mean_probs, template_top1)


# --------------------------------------------------------------------------- helpers


def _argmax_mask(a: Tensor) -> Tensor:
    # torch.argmax returns the first maximal index: ties go to the lowest class index.
    m = torch.zeros(a.shape, dtype=torch.bool, device=a.device)
    m[torch.arange(a.shape[0], device=a.device), a.argmax(1)] = True
    return m


def _sorted_desc(a: Tensor) -> tuple[Tensor, Tensor]:
    # Stable descending sort: among equal values the lower index comes first, so position 0
    # is always argmax(a) and top-k selections are deterministic.
    return torch.sort(a, dim=1, descending=True, stable=True)


def _scatter(order: Tensor, keep_sorted: Tensor) -> Tensor:
    out = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    out.scatter_(1, order, keep_sorted)
    return out


# --------------------------------------------------------------------------- builders


@register_builder("multi_prompt")
def multi_prompt(mean_probs: Tensor, template_top1: Tensor) -> Tensor:
    """Union of the per-template arg-maxes: Y_ij = 1 iff some template's top-1 is j (spec 1.4)."""
    n, k = mean_probs.shape
    if template_top1.numel() and (template_top1.min() < 0 or template_top1.max() >= k):
        raise BuilderError(f"template_top1 holds class indices outside [0, {k})")
    out = torch.zeros((n, k), dtype=torch.bool, device=mean_probs.device)
    out.scatter_(1, template_top1.to(mean_probs.device), True)
    return out


@register_builder("topk", params={"k": 5})
def topk(mean_probs: Tensor, template_top1: Tensor, *, k: int) -> Tensor:
    """The ``k`` classes with the largest A (all classes when k >= K)."""
    _, order = _sorted_desc(mean_probs)
    keep = torch.zeros(order.shape, dtype=torch.bool, device=order.device)
    keep[:, : min(k, order.shape[1])] = True
    return _scatter(order, keep)


@register_builder("prob_ratio", params={"k": 5, "threshold": 0.5})
def prob_ratio(mean_probs: Tensor, template_top1: Tensor, *, k: int, threshold: float) -> Tensor:
    """Among the top ``k`` of A, classes j with ``A_ij >= threshold * max_c A_ic``."""
    vals, order = _sorted_desc(mean_probs)
    keep = vals >= threshold * vals[:, :1]
    keep[:, min(k, keep.shape[1]):] = False
    keep[:, 0] = True  # the arg-max (already kept for threshold <= 1; explicit for clarity)
    return _scatter(order, keep)


@register_builder("prob_thres", params={"threshold": 0.1})
def prob_thres(mean_probs: Tensor, template_top1: Tensor, *, threshold: float) -> Tensor:
    """Classes with ``A_ij >= threshold``, always including the arg-max (no empty rows)."""
    return (mean_probs >= threshold) | _argmax_mask(mean_probs)


@register_builder("accu_prob_thres", params={"threshold": 0.9})
def accu_prob_thres(mean_probs: Tensor, template_top1: Tensor, *, threshold: float) -> Tensor:
    """Smallest top set of A (descending, ties to the lower index) whose total reaches ``threshold``."""
    vals, order = _sorted_desc(mean_probs)
    # Exclusive cumulative sum (mass of the classes ranked above), taken from the inclusive sum
    # itself so that a class reaching the threshold exactly is the last one kept.
    csum = torch.cumsum(vals, dim=1)
    before = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], dim=1)
    keep = before < threshold
    keep[:, 0] = True
    return _scatter(order, keep)
