"""What may change when a run is resumed: only its length, and only when nothing depends on it.

A resumed run is recorded (MLflow params, ``config.yaml``) as one run with one configuration,
so every hyper-parameter must equal the checkpoint's. Two exceptions: ``device`` (where the run
continues, not how it trains), and a larger ``epochs`` when that is a pure run-length extension,
i.e. the epochs already run would have been the same in the longer run: the learning rate
follows a cosine with a fixed period (``lr_period > 0``; with the default ``0`` the cosine spans
the run's own length) and the method does not schedule by the run length
(:attr:`coreg.methods.base.Method.uses_run_length`). An extension is logged as a warning and
tagged on the tracked run. Anything else is refused with the changed keys named.
"""

from __future__ import annotations

import logging
from typing import Any

from coreg.config import flatten
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

FREE = ("device",)
"""Keys that may differ on resume."""


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` of every setting that differs (nested dicts flattened)."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def run_length_dependence(cfg: dict[str, Any]) -> str | None:
    """Why the epochs of a run with config ``cfg`` depend on its total length, or ``None``."""
    from coreg.methods import get_method

    if not cfg.get("lr_period"):
        return "the cosine learning rate spans the whole run (lr_period=0)"
    if cfg.get("warmup_patience") and cfg.get("warmup_min_after"):
        return ("the adaptive warm-up may only end while warmup_min_after epochs remain "
                "(warmup_patience > 0 and warmup_min_after > 0)")
    name = str(cfg.get("method_name"))
    try:
        uses = get_method(name).uses_run_length
    except ValueError:  # an unknown method is refused elsewhere
        return None
    return f"{name} schedules its epochs by the run length" if uses else None


def check_resume_config(old: dict[str, Any], new: dict[str, Any], *, where: str,
                        log: bool = True) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume that changes hyper-parameters; return the allowed changes (epochs, device).

    Args:
        old: the checkpoint's config (``TrainConfig.to_dict()``).
        new: the config of the resuming process.
        where: the run folder or checkpoint, for the messages.
        log: log the allowed changes (an epochs extension is a warning).

    Raises:
        CoregError: a hyper-parameter differs, or ``epochs`` shrinks or grows where the epochs
            already run depend on the run length; the message names every key.
    """
    changes = config_changes(old, new)
    refused = {k: v for k, v in changes.items() if k not in ("epochs", *FREE)}
    why = ""
    if "epochs" in changes:
        a, b = changes["epochs"]
        dependence = run_length_dependence(new)
        if not (isinstance(a, int) and isinstance(b, int) and b > a):
            refused["epochs"] = changes["epochs"]
        elif dependence:
            refused["epochs"] = changes["epochs"]
            why = (f"; a longer run is not an extension of this one: {dependence} (a run that will be extended "
                   "needs a fixed --set lr_period=N, and --set warmup_patience=0, from its start)")
    if refused:
        listed = ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in refused.items())
        raise CoregError(f"cannot resume {where} with changed hyper-parameters: {listed}{why}; start a new run "
                         "for other settings")
    allowed = {k: v for k, v in changes.items() if k not in refused}
    if log and "epochs" in allowed:
        logger.warning("resuming %s: extending the run from %d to %d epochs", where, *allowed["epochs"])
    if log and "device" in allowed:
        logger.info("resuming %s on device %s (was %s)", where, allowed["device"][1], allowed["device"][0])
    return allowed
