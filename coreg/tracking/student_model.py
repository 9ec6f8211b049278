"""The student as an MLflow model: a ``pyfunc`` wrapper around ``student.pt``.

Why pyfunc and not ``mlflow.pytorch``: MLflow 3's default ``pt2`` format needs an input example,
loads back as an fx graph and can freeze the batch dimension (NOTES); the pickle format ties the
model to class import paths. The wrapper stores the plain ``student.pt`` artifact and rebuilds
the networks with :func:`coreg.models.create_model`, so ``mlflow.pyfunc.load_model(uri)`` gives a
model whose ``predict`` takes a batch of uint8 images ``[B, H, W, C]`` (the dataset's input size)
and returns class indices, or probabilities with ``params={"output": "probs"}``.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from coreg.errors import CoregError

logger = logging.getLogger(__name__)

MODEL_NAME = "student"


def _pyfunc_class() -> Any:
    import mlflow.pyfunc

    class StudentPyfunc(mlflow.pyfunc.PythonModel):
        """Batch of uint8 images ``[B, H, W, C]`` -> class indices (or probabilities)."""

        def load_context(self, context: Any) -> None:
            import torch

            from coreg.data.transforms import Augmenter
            from coreg.student import Student

            self.student = Student.load_file(context.artifacts["student"])
            self.module = self.student.eval_module()
            self.augment = Augmenter(self.student.spec)
            self._torch = torch

        def predict(self, context, model_input, params=None):  # noqa: ANN001,ANN201 - MLflow infers schemas from hints
            torch = self._torch
            x = np.asarray(model_input)
            spec = self.student.spec
            if x.ndim == 3 and spec.channels == 1:
                x = x[..., None]
            if x.ndim != 4 or x.shape[1:] != (spec.size, spec.size, spec.channels):
                raise ValueError(f"expected uint8 images [B, {spec.size}, {spec.size}, {spec.channels}], got {x.shape}")
            t = torch.from_numpy(np.ascontiguousarray(x.astype(np.uint8))).permute(0, 3, 1, 2)
            with torch.no_grad():
                logits = self.module(self.augment.test(t)).float()
            output = (params or {}).get("output", "class")
            if output == "probs":
                return torch.softmax(logits, 1).numpy()
            return logits.argmax(1).numpy()

    return StudentPyfunc


def log_student_model(student: Any, *, name: str = MODEL_NAME, registered_model_name: str | None = None,
                      student_file: str | Path | None = None, input_example: np.ndarray | None = None) -> str:
    """Log ``student`` (a :class:`coreg.student.Student`) to the active MLflow run as a pyfunc model.

    Returns:
        The model URI (``models:/m-...``).
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    spec = student.spec
    tmp = None
    if student_file is None:
        tmp = tempfile.TemporaryDirectory()
        student_file = student.save(Path(tmp.name) / "student.pt")
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, spec.size, spec.size, spec.channels))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(student.classes)))]),
        params=ParamSchema([ParamSpec("output", "string", "class")]),
    )
    try:
        info = mlflow.pyfunc.log_model(
            name=name, python_model=_pyfunc_class()(), artifacts={"student": str(student_file)},
            signature=signature, registered_model_name=registered_model_name,
            metadata={"classes": list(student.classes), "spec": spec.to_dict(),
                      "data_fingerprint": student.data.get("fingerprint")},
            pip_requirements=["coreg", "torch", "numpy"],
            input_example=input_example if input_example is not None
            else np.zeros((2, spec.size, spec.size, spec.channels), dtype=np.uint8),
        )
    finally:
        if tmp is not None:
            tmp.cleanup()
    mlflow.set_tag("student_model_uri", info.model_uri)
    return info.model_uri


def download_student(source: str) -> Path:
    """Local path of ``student.pt`` for a run id, ``runs:/`` or ``models:/`` URI.

    Raises:
        CoregError: the run or model does not exist or holds no student.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from coreg.tracking.mlflow import setup_mlflow

    setup_mlflow()
    try:
        if source.startswith("models:/") or source.startswith("runs:/"):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source))
            found = list(local.rglob("student.pt")) if local.is_dir() else [local]
            if not found:
                raise CoregError(f"{source} holds no student.pt")
            return found[0]
        return Path(mlflow.artifacts.download_artifacts(run_id=source, artifact_path="student.pt"))
    except MlflowException as e:
        raise CoregError(f"cannot fetch a student from {source}: {str(e).splitlines()[0]}") from None
