"""Atomic training checkpoints: everything needed to continue a run bit-identically."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from coreg._torch_io import torch_load_plain
from coreg.data.annotations import atomic_write_bytes
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


# Exact types: numpy scalars subclass float/int but do not load with weights_only.
_SCALARS = (str, int, float, bool, bytes, type(None), torch.dtype, torch.device, torch.Size)


def check_plain_state(obj: Any, where: str = "state") -> None:
    """Check that ``obj`` holds only tensors and plain types (what ``weights_only`` loading accepts).

    Raises:
        TypeError: some value is of another type (a numpy array, a custom class...); the message
            names where. This is a bug in the method's ``extra_state``, caught when the first
            checkpoint is written rather than when a user resumes.
    """
    if isinstance(obj, dict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where} has a key of type {type(k).__name__}; checkpoints need str/int keys")
            check_plain_state(v, f"{where}[{k!r}]")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            check_plain_state(v, f"{where}[{i}]")
    elif type(obj) not in _SCALARS and not isinstance(obj, torch.Tensor):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__name__}; checkpoints hold only tensors "
                        "and plain types so that they load with torch.load(weights_only=True)")


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file + rename): an interrupted save never corrupts
    the previous checkpoint.

    Raises:
        TypeError: ``state`` holds something other than tensors and plain types.
    """
    check_plain_state(state)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain types are unpickled (``weights_only=True``): checkpoints travel as MLflow
    artifacts, and a crafted pickle must not run code on ``--resume``.

    Raises:
        CoregError: missing or unreadable file, or one holding other objects (refused unread).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise CoregError(f"no checkpoint at {path}")
    state = torch_load_plain(path, what="checkpoint")
    if not isinstance(state, dict) or "epoch" not in state:
        raise CoregError(f"{path} is not a coreg training checkpoint")
    return state
