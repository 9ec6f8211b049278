"""One switch hides every progress bar (coreg's and MLflow's artifact bars) and is undone afterwards."""

from __future__ import annotations

import os

from coreg.progress import progress_bar, progress_bars, progress_enabled


def test_switch_hides_bars_and_restores_state(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    assert progress_enabled() and not progress_bar(range(3)).disable
    with progress_bars(False):
        assert not progress_enabled()
        assert progress_bar(range(3), disable=False).disable  # the switch wins over a caller's False
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        with progress_bars(True):
            assert progress_enabled()
        assert not progress_enabled()
    assert progress_enabled() and "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
    assert progress_bar(range(3), disable=True).disable  # a caller can still hide its own bar
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")
    with progress_bars(False):
        pass
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
