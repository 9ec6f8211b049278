"""The :class:`Tracker` protocol, a no-op tracker for tests and an in-memory recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Tracker(Protocol):
    """What the engine and the stages need from an experiment tracker (one active run)."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Log run parameters (flat dotted keys)."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log scalar metrics at ``step``."""

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set run tags."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a local file (or folder) as a run artifact."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store a text as an artifact file."""

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Store a matplotlib figure as an artifact image."""

    def log_model(self, model: Any, **kwargs: Any) -> str | None:
        """Log a student model (see :meth:`coreg.tracking.mlflow.MlflowTracker.log_model`); returns its URI."""

    @property
    def run_id(self) -> str | None:
        """Identifier of the active run (``None`` for trackers without runs)."""


class NullTracker:
    """Tracker that records nothing (tests, library use without MLflow)."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        pass

    def log_model(self, model: Any, **kwargs: Any) -> str | None:
        return None


class RecordingTracker(NullTracker):
    """Keeps everything in memory: handy for tests and for callbacks that read metrics back."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.tags: dict[str, Any] = {}
        self.artifacts: list[str] = []
        self.texts: dict[str, str] = {}

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append(str(path))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        self.artifacts.append(artifact_file)

    def history(self, key: str) -> list[float]:
        """All logged values of one metric, in order."""
        return [m[key] for _, m in self.metrics if key in m]
