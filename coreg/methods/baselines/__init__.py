"""Baselines on the shared engine (issue 5); importing this package registers every one of them.

One module per method, each citing its paper: ``zero_shot`` (the annotator itself), ``kd``,
``warmup_only``, ``proden``, ``cc``, ``rc``, ``lws``, ``cr_dpll``, ``pico``, ``dividemix``, ``alim``.
"""

from coreg.methods.baselines import (  # noqa: F401  (registration)
    alim,
    cc,
    cr_dpll,
    dividemix,
    kd,
    lws,
    pico,
    proden,
    rc,
    warmup_only,
    zero_shot,
)
from coreg.methods.baselines.zero_shot import zero_shot_accuracy

__all__ = ["zero_shot_accuracy"]
