"""The student as an MLflow model: a ``pyfunc`` wrapper around ``student.pt``.

Why pyfunc and not ``mlflow.pytorch``: MLflow 3's default ``pt2`` format needs an input example,
loads back as an fx graph and can freeze the batch dimension (NOTES); the pickle format ties the
model to class import paths. The wrapper stores the plain ``student.pt`` artifact and rebuilds
the networks with :func:`coreg.models.create_model`, so ``mlflow.pyfunc.load_model(uri)`` gives a
model whose ``predict`` takes a batch of uint8 images ``[B, H, W, C]`` (the dataset's input size)
and returns class indices, or probabilities with ``params={"output": "probs"}``.

The model is logged as "models from code" (:data:`MODEL_CODE_FILE`, a file that calls
``mlflow.models.set_model``) rather than as a cloudpickled object: nothing is unpickled when the
model is loaded, and the class is imported from the installed ``coreg``. Logging lives in
:mod:`coreg.tracking.mlflow`; this module only defines the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

MODEL_CODE_FILE = Path(__file__).with_name("_student_model_code.py")
"""The models-from-code file passed to ``mlflow.pyfunc.log_model(python_model=...)``."""


class StudentPyfunc(mlflow.pyfunc.PythonModel):
    """Batch of uint8 images ``[B, H, W, C]`` -> class indices (or probabilities)."""

    def load_context(self, context: Any) -> None:
        """Rebuild the student from the ``student`` artifact (a ``student.pt`` file)."""
        import torch

        from coreg.data.transforms import Augmenter
        from coreg.student import Student

        self.student = Student.load_file(context.artifacts["student"])
        self.module = self.student.eval_module()
        self.augment = Augmenter(self.student.spec)
        self._torch = torch

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        """Class indices ``[B]``, or softmax probabilities ``[B, K]`` with ``params={"output": "probs"}``.

        Raises:
            ValueError: the images do not have the student's size and channels.
        """
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
