"""The trained student: what evaluation, registration, export and serving see.

A student is saved as one ``student.pt`` file (a plain dict, loadable with
``torch.load(weights_only=True)``): the model name and keyword arguments of each network, their
state dicts, the class names, the image spec (size, channels, mean/std, resize rule), the dataset
description (name, fingerprint) and where it came from (run id, method).

This module knows nothing of MLflow: :func:`coreg.tracking.mlflow.load_student` also accepts an
MLflow run id or a ``models:/NAME@alias`` / ``models:/NAME/VERSION`` URI.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from coreg._torch_io import torch_load_plain
from coreg.data.annotations import atomic_write_bytes
from coreg.data.datasets import ImageSpec
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

STUDENT_FILE = "student.pt"


@dataclass
class Student:
    """A trained student.

    Attributes:
        nets: the networks (each ``forward(x) -> (logits, z)``).
        classes: class names in label order.
        spec: the image spec (input size, channels, mean/std, resize rule).
        data: dataset description (``name``, ``fingerprint``, ...).
        source: provenance (``run_id``, ``method``, ``model_version``, ...).
    """

    nets: list[nn.Module]
    classes: list[str]
    spec: ImageSpec
    data: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def eval_module(self, *, single: bool = False) -> nn.Module:
        """The eval module: normalised float ``[B, C, H, W]`` -> logits ``[B, K]``.

        The logit-sum ensemble of all networks (spec 3.10), or the first network alone.
        """
        from coreg.models import LogitSumEnsemble

        nets = self.nets[:1] if single else self.nets
        return LogitSumEnsemble(nets).eval()

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form (see module docstring)."""
        return {
            "format": "coreg-student-v1",
            "nets": [{"name": n.coreg_spec["name"], "kwargs": n.coreg_spec["kwargs"],
                      "state_dict": {k: v.detach().cpu() for k, v in n.state_dict().items()}} for n in self.nets],
            "classes": list(self.classes),
            "spec": self.spec.to_dict(),
            "data": dict(self.data),
            "source": dict(self.source),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``student.pt`` atomically."""
        buf = io.BytesIO()
        torch.save(self.to_dict(), buf)
        path = Path(path)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Student:
        """Rebuild from :meth:`to_dict` output."""
        from coreg.models import create_model

        if d.get("format") != "coreg-student-v1":
            raise CoregError("not a coreg student file (missing format coreg-student-v1)")
        nets = []
        for spec in d["nets"]:
            net = create_model(spec["name"], **spec["kwargs"])
            net.load_state_dict(spec["state_dict"])
            nets.append(net.eval())
        sd = dict(d["spec"])
        sd["mean"], sd["std"] = tuple(sd["mean"]), tuple(sd["std"])
        return cls(nets=nets, classes=list(d["classes"]), spec=ImageSpec(**sd), data=dict(d["data"]),
                   source=dict(d["source"]))

    @classmethod
    def load_file(cls, path: str | Path) -> Student:
        """Load a ``student.pt`` file.

        Raises:
            CoregError: missing or unreadable file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / STUDENT_FILE
        if not path.exists():
            raise CoregError(f"student file {path} does not exist")
        d = torch_load_plain(path, what="student file")
        if not isinstance(d, dict):
            raise CoregError(f"{path} is not a coreg student file")
        return cls.from_dict(d)
