"""MLflow implementation of :class:`~coreg.tracking.Tracker`.

Tracking URI: ``$MLFLOW_TRACKING_URI`` or, by default, ``sqlite:///<cwd>/mlflow.db`` (MLflow 3's
file store refuses to start unless explicitly allowed, see NOTES).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        """Log a student as an MLflow pyfunc model (see :mod:`coreg.tracking.student_model`)."""
        from coreg.tracking.student_model import log_student_model

        return log_student_model(model, **kwargs)

    def artifact_dir(self) -> Path:
        """A local temporary folder for files that will be logged as artifacts."""
        return Path(tempfile.mkdtemp(prefix="coreg-artifacts-"))
