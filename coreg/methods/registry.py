"""Method registry: ``register_method(name, config=...)``, ``create_method``, ``list_methods``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from coreg.errors import CoregError
from coreg.methods.base import Method, MethodConfig

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str, *, config: type[MethodConfig]) -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a method and its config class (duplicates are an error)."""

    def deco(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        cls.config_cls = config
        _METHODS[name] = cls
        return cls

    return deco


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``.

    Raises:
        CoregError: unknown name (the message lists the valid ones).
    """
    if name not in _METHODS:
        raise CoregError(f"unknown method {name!r}; valid: {', '.join(sorted(_METHODS))}")
    return _METHODS[name]


def create_method(name: str, cfg: MethodConfig | None = None, **kwargs: Any) -> Method:
    """Instantiate a registered method (default config when ``cfg`` is None)."""
    cls = get_method(name)
    return cls(cfg if cfg is not None else cls.config_cls(), **kwargs)


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching ``pattern``."""
    return sorted(n for n in _METHODS if fnmatch.fnmatch(n, pattern))
