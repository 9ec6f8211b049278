"""Atomic training checkpoints: everything needed to continue a run bit-identically."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from coreg.data.annotations import atomic_write_bytes
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temporary file + rename): an interrupted save never corrupts
    the previous checkpoint."""
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CoregError: missing or unreadable file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.exists():
        raise CoregError(f"no checkpoint at {path}")
    try:
        # weights_only: a checkpoint may come from an MLflow artifact store; never unpickle code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CoregError(f"refusing to load checkpoint {path}: it holds objects other than tensors and plain "
                         f"types (possibly malicious; {first})") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CoregError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
