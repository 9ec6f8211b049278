"""Loading ``.pt`` files that users pass in (checkpoints, students) without running their code."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from coreg.errors import CoregError


def torch_load_plain(path: str | Path, *, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure as a one-line error.

    ``weights_only`` unpickles tensors and plain types only: a crafted pickle (``__reduce__``
    calling ``os.system``...) is refused before anything in it runs.

    Args:
        path: the file.
        what: what the file should be (``checkpoint``, ``student file``), for the message.

    Raises:
        CoregError: unreadable file, or one holding other objects than tensors and plain types.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message starts with advice to retry with weights_only=False: not for untrusted files.
        detail = next((ln.strip() for ln in str(e).splitlines() if "nsupported" in ln), "")
        detail = detail.split(". ")[0].rstrip(".")  # drop the advice on how to allow-list it
        raise CoregError(f"refusing to load {what} {path}: it holds more than tensors and plain types (corrupt, "
                         f"not written by coreg, or crafted to run code){'; ' + detail if detail else ''}"
                         ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CoregError(f"cannot read {what} {path}: {type(e).__name__}: {first}") from None
