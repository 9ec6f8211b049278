"""Experiment tracking behind a small protocol; the engine never imports mlflow itself."""

from coreg.tracking.base import NullTracker, RecordingTracker, Tracker

__all__ = ["Tracker", "NullTracker", "RecordingTracker", "MlflowTracker"]


def __getattr__(name: str):  # lazy: importing mlflow costs seconds
    if name == "MlflowTracker":
        from coreg.tracking.mlflow import MlflowTracker

        return MlflowTracker
    raise AttributeError(name)
