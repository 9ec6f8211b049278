"""One switch for every progress bar: coreg's own (image decoding, embedding) and MLflow's.

``coreg train --no-progress`` (and ``coreg tune`` without ``--progress``) run inside
``with progress_bars(False):``; library code makes its bars with :func:`progress_bar`, which
honours that setting on top of its own ``disable`` argument. MLflow's artifact download bars
(shown when a logged model is validated) follow the same switch through MLflow's
``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` setting. The training loop's per-epoch bars are also
controlled by its explicit ``progress`` argument.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

from tqdm.auto import tqdm

_SHOW: ContextVar[bool] = ContextVar("coreg_progress_bars", default=True)
_MLFLOW_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


def progress_enabled() -> bool:
    """Whether progress bars are shown in the current context."""
    return _SHOW.get()


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """Show (or hide) every progress bar inside the block."""
    token = _SHOW.set(show)
    old = os.environ.get(_MLFLOW_ENV)
    if not show:
        os.environ[_MLFLOW_ENV] = "false"
    try:
        yield
    finally:
        _SHOW.reset(token)
        if not show:
            if old is None:
                os.environ.pop(_MLFLOW_ENV, None)
            else:
                os.environ[_MLFLOW_ENV] = old


def progress_bar(iterable: Iterable[Any] | None = None, *, disable: bool | None = False, **kwargs: Any) -> tqdm:
    """A tqdm bar that is hidden when :func:`progress_bars` says so (``disable`` as in tqdm)."""
    return tqdm(iterable, disable=True if not _SHOW.get() else disable, **kwargs)
