"""The study driver with a fake trainer (no torch, no MLflow): budget, resume, failures, pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from coreg.engine.trainer import FitResult
from coreg.errors import CoregError
from coreg.tuning.study import (
    MetricUnavailable,
    PruningCallback,
    TuneConfig,
    redact_url,
    resolve_suggest,
    run_study,
    study_figures,
)

optuna.logging.set_verbosity(optuna.logging.ERROR)


def build(overrides: Any) -> Any:
    from coreg._cli.train import build_train_config

    return build_train_config("coreg", overrides=list(overrides), epochs=4, warmup=1)


def lr_space(method: str, trial: optuna.Trial) -> list[str]:
    return [f"lr={trial.suggest_float('lr', 1e-3, 1e-1, log=True)!r}"]


class FakeTrain:
    """Per-epoch metrics from the lr (higher is better); lr > 1 'diverges' like the engine does."""

    def __init__(self, curve: Any = None) -> None:
        self.calls: list[Path] = []
        self.curve = curve or (lambda cfg, epoch: min(1.0, cfg.lr * 10) * (epoch + 1) / cfg.epochs)

    def __call__(self, *, cfg: Any, out_dir: Path, tracker: Any, callbacks: Any) -> FitResult:
        self.calls.append(out_dir)
        history = []
        for epoch in range(cfg.epochs):
            if cfg.lr > 1:
                raise CoregError(f"training diverged at epoch {epoch} (net1_loss not finite)")
            v = self.curve(cfg, epoch)
            m = {"val_approx_acc": v, "val_covering_rate": min(1.0, v + 0.1)}
            history.append(m)
            for cb in callbacks:
                cb(epoch, m)
        return FitResult(metrics=dict(history[-1]), history=history, student=None, out_dir=out_dir,  # type: ignore[arg-type]
                         selection_metric="val_approx_acc", best_epoch=cfg.epochs - 1)


def tcfg(tmp_path: Path, **kw: Any) -> TuneConfig:
    base = {"n_trials": 3, "storage": f"sqlite:///{tmp_path}/optuna.db", "study_name": "s", "pruner": "none"}
    return TuneConfig(**(base | kw))


def load(cfg: TuneConfig) -> optuna.Study:
    return optuna.load_study(study_name=cfg.study_name, storage=cfg.storage)


def test_budget_resume_and_trial_folders(tmp_path: Path) -> None:
    train = FakeTrain()
    s1 = run_study(tcfg(tmp_path), build_config=build, train=train, suggest=lr_space, out_dir=tmp_path / "out")
    assert s1.counts == {"COMPLETE": 3} and len(s1.ran) == 3
    assert [p.name for p in train.calls] == ["trial-0", "trial-1", "trial-2"]
    best = max(load(tcfg(tmp_path)).trials, key=lambda t: t.value)
    assert (s1.best_trial, s1.best_value) == (best.number, best.value)
    # The objective is the last epoch's metric.
    assert best.value == pytest.approx(min(1.0, best.params["lr"] * 10))
    s2 = run_study(tcfg(tmp_path, n_trials=5), build_config=build, train=train, suggest=lr_space,
                   out_dir=tmp_path / "out")
    assert s2.counts == {"COMPLETE": 5} and [r.number for r in s2.ran] == [3, 4]
    s3 = run_study(tcfg(tmp_path, n_trials=5), build_config=build, train=train, suggest=lr_space,
                   out_dir=tmp_path / "out")
    assert s3.ran == [] and s3.counts == {"COMPLETE": 5}


def test_failed_trial_recorded_and_study_goes_on(tmp_path: Path) -> None:
    def space(method: str, trial: optuna.Trial) -> list[str]:
        return ["lr=1e6"] if trial.number == 1 else lr_space(method, trial)

    s = run_study(tcfg(tmp_path), build_config=build, train=FakeTrain(), suggest=space, out_dir=tmp_path / "o")
    assert s.counts == {"COMPLETE": 3, "FAIL": 1}  # failed trials do not count towards n_trials
    failed = [t for t in load(tcfg(tmp_path)).trials if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in failed] == [1]
    assert "diverged" in failed[0].user_attrs["fail_reason"]
    assert [r.state for r in s.ran] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]


def test_bad_suggested_value_fails_the_trial_only(tmp_path: Path) -> None:
    def space(method: str, trial: optuna.Trial) -> list[str]:
        return ["method.p_threshold=7.0"] if trial.number == 0 else lr_space(method, trial)

    s = run_study(tcfg(tmp_path, n_trials=1), build_config=build, train=FakeTrain(), suggest=space,
                  out_dir=tmp_path / "o")
    assert s.counts == {"FAIL": 1, "COMPLETE": 1}


def test_stops_after_consecutive_failures(tmp_path: Path) -> None:
    s = run_study(tcfg(tmp_path, max_failures=2), build_config=build, train=FakeTrain(),
                  suggest=lambda m, t: ["lr=5.0"], out_dir=tmp_path / "o")
    assert s.counts == {"FAIL": 2} and "in a row" in s.stopped and s.best_trial is None


def test_median_pruner_prunes_a_poor_trial_after_warmup(tmp_path: Path) -> None:
    lrs = [0.05, 0.06, 0.001, 0.07]

    def space(method: str, trial: optuna.Trial) -> list[str]:
        return [f"lr={lrs[trial.number]!r}"]

    s = run_study(tcfg(tmp_path, n_trials=4, pruner="median"), build_config=build, train=FakeTrain(), suggest=space,
                  out_dir=tmp_path / "o")
    assert s.counts == {"COMPLETE": 3, "PRUNED": 1}
    pruned = load(tcfg(tmp_path)).trials[2]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    # Reported every epoch up to the prune, never pruned inside the warm-up (epoch 0).
    assert sorted(pruned.intermediate_values) == [0, 1]


def test_metric_choice_and_unavailable_metric(tmp_path: Path) -> None:
    s = run_study(tcfg(tmp_path, n_trials=1, metric="val_covering_rate"), build_config=build, train=FakeTrain(),
                  suggest=lr_space, out_dir=tmp_path / "o")
    t = load(tcfg(tmp_path)).trials[0]
    assert s.best_value == pytest.approx(min(1.0, min(1.0, t.params["lr"] * 10) + 0.1))
    with pytest.raises(MetricUnavailable, match="val_acc"):
        run_study(tcfg(tmp_path, study_name="g", metric="val_acc"), build_config=build, train=FakeTrain(),
                  suggest=lr_space, out_dir=tmp_path / "g")


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    run_study(tcfg(tmp_path, n_trials=1), build_config=build, train=FakeTrain(), suggest=lr_space,
              out_dir=tmp_path / "o", study_attrs={"data_fingerprint": "aaa"})
    with pytest.raises(CoregError, match="data_fingerprint"):
        run_study(tcfg(tmp_path, n_trials=2), build_config=build, train=FakeTrain(), suggest=lr_space,
                  out_dir=tmp_path / "o", study_attrs={"data_fingerprint": "bbb"})
    with pytest.raises(CoregError, match="holds trials of study s"):
        run_study(tcfg(tmp_path, study_name="other"), build_config=build, train=FakeTrain(), suggest=lr_space,
                  out_dir=tmp_path / "o")


def test_pruning_callback_reports_and_raises() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    cb = PruningCallback(trial, "auto")
    cb(0, {"val_approx_acc": 0.9, "val_covering_rate": 0.95})
    with pytest.raises(optuna.TrialPruned):
        cb(1, {"val_approx_acc": 0.9, "val_acc": 0.2})  # auto prefers val_acc when it is logged
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {0: 0.9, 1: 0.2}
    with pytest.raises(MetricUnavailable):
        PruningCallback(trial, "val_acc")(2, {"val_approx_acc": 0.5})


def test_figures_need_two_completed_trials(tmp_path: Path) -> None:
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert set(study_figures(study)) == {"optimization_history.png"}
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert set(study_figures(study)) == {"optimization_history.png", "param_importances.png"}


def test_config_validation_and_redaction() -> None:
    with pytest.raises(CoregError):
        TuneConfig(pruner="bogus")
    with pytest.raises(CoregError):
        TuneConfig(study_name="bad name'")
    with pytest.raises(CoregError):
        TuneConfig(storage="optuna.db")
    assert redact_url("postgresql://u:secret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact_url("sqlite:///x.db") == "sqlite:///x.db"


def test_real_coreg_space_drives_trials(tmp_path: Path) -> None:
    s = run_study(tcfg(tmp_path, n_trials=2), build_config=build, train=FakeTrain(), suggest=resolve_suggest(),
                  out_dir=tmp_path / "o")
    assert s.counts == {"COMPLETE": 2}
    t = load(tcfg(tmp_path)).trials[0]
    assert {"lr", "lambda_u", "p_threshold"} <= set(t.params)
    assert any(o.startswith("method.lambda_u=") for o in t.user_attrs["overrides"])


# --------------------------------------------------------------------------- trials left RUNNING by dead workers

KILLED_WORKER = """
import os, signal, sys
import optuna
from coreg.tuning.study import make_storage, worker_id
study = optuna.create_study(study_name="s", storage=make_storage(sys.argv[1]), direction="maximize",
                            load_if_exists=True)
def objective(trial):  # what Objective does first, then the process dies mid-training
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("mlflow_run_id", "run-of-killed-trial")
    os.kill(os.getpid(), signal.SIGKILL)
study.optimize(objective, n_trials=1)
"""


class RecordingTracking:
    """NullStudyTracking that records run status changes."""

    def __init__(self) -> None:
        from coreg.tuning.study import NullStudyTracking

        self.inner = NullStudyTracking()
        self.statuses: list[tuple[str | None, str]] = []

    def parent(self, **kw: Any) -> Any:
        return self.inner.parent(**kw)

    def trial(self, **kw: Any) -> Any:
        return self.inner.trial(**kw)

    def set_status(self, run_id: str | None, status: str) -> None:
        self.statuses.append((run_id, status))


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX only")
def test_trial_of_a_killed_local_worker_is_failed_at_once_and_retried(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = tcfg(tmp_path, n_trials=2)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", KILLED_WORKER, cfg.storage], capture_output=True, text=True, env=env)
    assert r.returncode == -9, r.stderr
    assert [t.state.name for t in load(cfg).trials] == ["RUNNING"]  # heartbeat fresh: Optuna alone keeps it
    tracking = RecordingTracking()
    s = run_study(cfg, build_config=build, train=FakeTrain(), suggest=lr_space, out_dir=tmp_path / "o",
                  tracking=tracking)  # type: ignore[arg-type]
    assert s.counts == {"FAIL": 1, "COMPLETE": 2} and [r.number for r in s.ran] == [1, 2]
    assert ("run-of-killed-trial", "FAILED") in tracking.statuses


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_that_never_started_is_failed_after_the_grace_period(tmp_path: Path, monkeypatch: Any) -> None:
    import time

    import coreg.tuning.study as study_mod

    monkeypatch.setattr(study_mod, "GRACE_PERIOD_S", 1)
    cfg = tcfg(tmp_path, n_trials=1)
    study = optuna.create_study(study_name="s", storage=study_mod.make_storage(cfg.storage), direction="maximize")
    study.ask()  # RUNNING, no heartbeat row and no worker: Optuna's stale check never sees it
    time.sleep(1.1)
    s = run_study(cfg, build_config=build, train=FakeTrain(), suggest=lr_space, out_dir=tmp_path / "o")
    assert s.counts == {"FAIL": 1, "COMPLETE": 1}


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_remote_worker_trial_is_awaited_then_retried_once_stale(tmp_path: Path, monkeypatch: Any) -> None:
    import coreg.tuning.study as study_mod

    monkeypatch.setattr(study_mod, "GRACE_PERIOD_S", 1)
    monkeypatch.setattr(study_mod, "HEARTBEAT_S", 1)
    cfg = tcfg(tmp_path, n_trials=1)
    storage = study_mod.make_storage(cfg.storage)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    t = study.ask()
    t.set_user_attr("worker", "another-host:4242")
    storage.record_heartbeat(t._trial_id)  # then that host went silent
    # The budget (1) is reached by the remote trial alone: without waiting, nothing would run.
    s = run_study(cfg, build_config=build, train=FakeTrain(), suggest=lr_space, out_dir=tmp_path / "o")
    assert s.counts == {"FAIL": 1, "COMPLETE": 1} and [r.number for r in s.ran] == [1]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_trial_of_a_live_local_worker_still_counts(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    import coreg.tuning.study as study_mod

    cfg = tcfg(tmp_path, n_trials=1)
    study = optuna.create_study(study_name="s", storage=study_mod.make_storage(cfg.storage), direction="maximize")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        study.ask().set_user_attr("worker", f"{socket.gethostname()}:{live.pid}")
        s = run_study(cfg, build_config=build, train=FakeTrain(), suggest=lr_space, out_dir=tmp_path / "o")
    finally:
        live.kill()
        live.wait()
    assert s.counts == {"RUNNING": 1} and s.ran == []
