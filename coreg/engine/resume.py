"""What may change when a run is resumed: only its length.

A resumed run is recorded (MLflow params, ``config.yaml``) as one run with one configuration,
so every hyper-parameter must equal the checkpoint's. Two exceptions: a larger ``epochs`` (a
run-length extension, logged as such) and ``device`` (where the run continues, not how it
trains). Anything else is refused with the changed keys named.
"""

from __future__ import annotations

import logging
from typing import Any

from coreg.config import flatten
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

EXTENSIBLE = ("epochs",)
"""Keys that may grow on resume (the epochs already run are unchanged by a larger value)."""
FREE = ("device",)
"""Keys that may differ on resume."""


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` of every setting that differs (nested dicts flattened)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def check_resume_config(old: dict[str, Any], new: dict[str, Any], *, where: str,
                        log: bool = True) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume that changes hyper-parameters; return the allowed changes (epochs, device).

    Args:
        old: the checkpoint's config (``TrainConfig.to_dict()``).
        new: the config of the resuming process.
        where: the run folder or checkpoint, for the messages.
        log: log the allowed changes (an epochs extension is a warning).

    Raises:
        CoregError: a hyper-parameter differs, or ``epochs`` shrinks; the message names every key.
    """
    changes = config_changes(old, new)
    refused = {k: v for k, v in changes.items() if k not in EXTENSIBLE + FREE}
    for key in EXTENSIBLE:
        if key in changes and not (isinstance(changes[key][1], int) and isinstance(changes[key][0], int)
                                   and changes[key][1] > changes[key][0]):
            refused[key] = changes[key]
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in refused.items())
        raise CoregError(f"cannot resume {where} with changed hyper-parameters: {listed}; only a larger --epochs "
                         "may change (start a new run for other settings)")
    allowed = {k: v for k, v in changes.items() if k not in refused}
    if log and "epochs" in allowed:
        logger.warning("resuming %s: extending the run from %d to %d epochs", where, *allowed["epochs"])
    if log and "device" in allowed:
        logger.info("resuming %s on device %s (was %s)", where, allowed["device"][1], allowed["device"][0])
    return allowed
