"""Model registry: ``register_model`` / ``create_model`` / ``list_models`` (the timm pattern).

A decorator fills a module-level dict at import time; :mod:`coreg.models` imports every
implementation module so the decorators run. Unknown and duplicate names are errors (we have no
plugins, so a duplicate is always a bug). Every created module carries ``coreg_spec`` (its
registry name and keyword arguments, JSON-able) so a saved student can be rebuilt from it.
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Callable, TypeVar

from torch import nn

__all__ = ["register_model", "create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(name: str) -> Callable[[F], F]:
    """Decorator registering a model class or factory under ``name``.

    Args:
        name: lowercase snake registry key.

    Returns:
        The decorator; it returns the decorated object unchanged.

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorator(fn: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name]!r})")
        _MODELS[name] = fn
        return fn

    return decorator


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model and record how it was built.

    The returned module gets ``coreg_spec = {"name": name, "kwargs": dict(kwargs)}``, so
    ``create_model(spec["name"], **spec["kwargs"])`` re-creates the architecture.

    Args:
        name: registry key (see :func:`list_models`).
        **kwargs: keyword arguments of the model constructor; plain JSON-able values.

    Returns:
        The new module.

    Raises:
        ValueError: unknown ``name``, or keyword arguments that are not JSON-able.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {sorted(_MODELS)}")
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model kwargs must be plain JSON-able values, got {kwargs!r}") from exc
    model = _MODELS[name](**kwargs)
    setattr(model, "coreg_spec", {"name": name, "kwargs": dict(kwargs)})  # noqa: B010 (typed nn.Module setattr)
    return model


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registry keys matching an ``fnmatch`` pattern.

    Args:
        pattern: shell-style pattern, e.g. ``"*resnet*"``.

    Returns:
        Matching names, sorted.
    """
    return sorted(n for n in _MODELS if fnmatch.fnmatchcase(n, pattern))
