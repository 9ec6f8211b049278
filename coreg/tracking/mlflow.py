"""MLflow implementation of :class:`~coreg.tracking.Tracker`, and the student as an MLflow model.

Everything here that touches MLflow: the tracker, logging a student as a pyfunc model (the model
class is :mod:`coreg.tracking.student_model`), and loading a student back from a run or the Model
Registry. :mod:`coreg.student` itself never imports MLflow.

Tracking URI: ``$MLFLOW_TRACKING_URI`` or, by default, ``sqlite:///<cwd>/mlflow.db`` (MLflow 3's
file store refuses to start unless explicitly allowed, see NOTES).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreg.errors import CoregError

if TYPE_CHECKING:
    from coreg.student import Student

logger = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a sqlite database in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def setup_mlflow(experiment: str | None = None, tracking_uri: str | None = None) -> Any:
    """Point mlflow at the tracking store and select (create) ``experiment``. Returns the module."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri or default_tracking_uri())
    if experiment:
        mlflow.set_experiment(experiment)
    return mlflow


def _clean(v: Any) -> Any:
    s = str(v)
    return s if len(s) <= 6000 else s[:5990] + "..."


class MlflowTracker:
    """Logs into the active MLflow run (use :meth:`start` to open one)."""

    def __init__(self, run: Any) -> None:
        import mlflow

        self._mlflow = mlflow
        self._run = run

    @classmethod
    @contextlib.contextmanager
    def start(cls, *, experiment: str | None = None, run_name: str | None = None, nested: bool = False,
              tags: dict[str, Any] | None = None, tracking_uri: str | None = None,
              run_id: str | None = None) -> Iterator[MlflowTracker]:
        """Open (or resume, with ``run_id``) a run and yield a tracker logging into it."""
        mlflow = setup_mlflow(experiment, tracking_uri)
        with mlflow.start_run(run_name=run_name, nested=nested, tags=tags, run_id=run_id) as run:
            yield cls(run)

    @property
    def run_id(self) -> str:
        return self._run.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        items = {k: _clean(v) for k, v in params.items()}
        keys = list(items)
        for i in range(0, len(keys), 90):  # the REST API takes at most 100 params per batch
            self._mlflow.log_params({k: items[k] for k in keys[i: i + 90]})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and v == v}
        if clean:
            self._mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._mlflow.set_tags({k: _clean(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self._mlflow.log_artifacts(str(p), artifact_path=artifact_path)
        else:
            self._mlflow.log_artifact(str(p), artifact_path=artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self._mlflow.log_figure(figure, artifact_file)

    def log_model(self, model: Any, **kwargs: Any) -> str | None:
        """Log a student as an MLflow pyfunc model (see :func:`log_student_model`)."""
        return log_student_model(model, **kwargs)

    def artifact_dir(self) -> Path:
        """A local temporary folder for files that will be logged as artifacts."""
        return Path(tempfile.mkdtemp(prefix="coreg-artifacts-"))


MODEL_NAME = "student"


def log_student_model(student: Student, *, name: str = MODEL_NAME, registered_model_name: str | None = None,
                      student_file: str | Path | None = None, input_example: np.ndarray | None = None) -> str:
    """Log ``student`` to the active MLflow run as a pyfunc model (models from code).

    Args:
        student: the student.
        name: the logged model's name in the run.
        registered_model_name: also register it under this name.
        student_file: its ``student.pt`` (default: saved to a temporary folder).
        input_example: uint8 images ``[B, H, W, C]`` stored with the model (default two black images).

    Returns:
        The model URI (``models:/m-...``).
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    from coreg.tracking.student_model import MODEL_CODE_FILE

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
            name=name, python_model=str(MODEL_CODE_FILE), artifacts={"student": str(student_file)},
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
    from mlflow.exceptions import MlflowException

    mlflow = setup_mlflow()
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


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def load_student(source: str) -> Student:
    """Load a student from a ``student.pt`` path (or run folder), an MLflow run id or a ``models:/`` URI.

    Raises:
        CoregError: nothing usable at ``source``.
    """
    from coreg.student import Student

    if Path(source).exists():
        return Student.load_file(source)
    if source.startswith(("models:/", "runs:/")) or _RUN_ID.match(source):
        return Student.load_file(download_student(source))
    raise CoregError(f"no student at {source!r}: expected a student.pt path, a run id or a models:/ URI")


def run_status(run_id: str) -> str | None:
    """Status of an MLflow run (``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED``); ``None`` if the store lacks it."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    setup_mlflow()
    try:
        return str(MlflowClient().get_run(run_id).info.status)
    except MlflowException:
        return None


def mark_killed(run_id: str) -> None:
    """End a run left ``RUNNING`` by a process that died (kill -9, power loss) as ``KILLED``."""
    from mlflow.tracking import MlflowClient

    setup_mlflow()
    MlflowClient().set_terminated(run_id, status="KILLED")
