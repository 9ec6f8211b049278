"""``coreg tune`` / ``coreg register`` end to end on digits (tiny CNN, 2 epochs) with sqlite stores.

One MLflow store for the whole module (creating one costs seconds): the study is run once by a
fixture (3 trials, one of which diverges, then resumed to 4) and the tests inspect it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from click.testing import CliRunner

from coreg.cli import main

TINY = ["--epochs", "2", "--warmup", "1", "--set", "model.name=tiny_cnn", "--set", "method.batch_size=64",
        "--set", "method.divide_batch_size=512", "--device", "cpu", "--pruner", "none"]

WORKER = """
import sys
import coreg.tuning.study as st

def space(method, trial):
    return [f"lr={trial.suggest_float('lr', 1e-3, 5e-2, log=True)!r}"]

st.resolve_suggest = lambda: space
from coreg.cli import main
main(sys.argv[1:])
"""


def lr_space(method: str, trial: optuna.Trial) -> list[str]:
    """Trial 1 diverges (lr=1e6: the engine raises CoregError on non-finite losses)."""
    if trial.number == 1:
        return ["lr=1000000.0"]
    return [f"lr={trial.suggest_float('lr', 1e-3, 5e-2, log=True)!r}"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("tune")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    mp.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{root}/mlflow.db")
    mp.setenv("OMP_NUM_THREADS", "1")
    yield root
    mp.undo()


@pytest.fixture(autouse=True)
def _isolated_mlflow(store: Path) -> None:
    """Replaces the per-test store of tests/conftest.py by the module's store (and its global state)."""
    import mlflow
    from mlflow.tracking import fluent

    uri = f"sqlite:///{store}/mlflow.db"
    while mlflow.active_run() is not None:
        mlflow.end_run()
    fluent._active_experiment_id = None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)


@pytest.fixture(scope="module")
def annotation(store: Path, digits: Any) -> str:
    from coreg.simulate import simulate_annotation

    path = store / "flip.npz"
    simulate_annotation(digits, kind="flip", q=0.1, eta=0.1, seed=0).save(path)
    return str(path)


def tune_args(store: Path, annotation: str, study: str, n: int) -> list[str]:
    return ["tune", "--data", "digits", "--annotations", annotation, "--n-trials", str(n), "--storage",
            f"sqlite:///{store}/optuna.db", "--study-name", study, "--out", str(store / study), *TINY]


@pytest.fixture(scope="module")
def study_runs(store: Path, annotation: str) -> dict[str, Any]:
    import coreg.tuning.study as st

    mp = pytest.MonkeyPatch()
    mp.setattr(st, "resolve_suggest", lambda: lr_space)
    runner = CliRunner()
    try:
        first = runner.invoke(main, tune_args(store, annotation, "s", 3))
        assert first.exit_code == 0, first.output
        trials_after_first = len(optuna.load_study(study_name="s", storage=f"sqlite:///{store}/optuna.db").trials)
        second = runner.invoke(main, tune_args(store, annotation, "s", 4))
        assert second.exit_code == 0, second.output
    finally:
        mp.undo()
    return {"first": first.output, "second": second.output, "trials_after_first": trials_after_first}


def _runs(filter_string: str) -> list[Any]:
    from coreg.tracking.mlflow import setup_mlflow

    mlflow = setup_mlflow()
    exp = mlflow.get_experiment_by_name("coreg-tune")
    return mlflow.MlflowClient().search_runs([exp.experiment_id], filter_string=filter_string, max_results=100)


def test_study_with_nested_trial_runs_under_one_parent(study_runs: dict[str, Any], store: Path) -> None:
    assert study_runs["trials_after_first"] == 4  # 3 complete + 1 failed (retried)
    assert "trial   1 FAIL" in study_runs["first"]
    parents = _runs("tags.`coreg.study` = 's' and tags.`coreg.role` = 'study'")
    assert len(parents) == 1
    parent = parents[0]
    trials = _runs("tags.`coreg.study` = 's' and tags.`coreg.role` = 'trial'")
    assert len(trials) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store}/optuna.db")
    best = study.best_trial
    assert parent.data.tags["best_run"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.metrics["best_value"] == pytest.approx(best.value)
    assert float(parent.data.tags["best_param.lr"]) == pytest.approx(best.params["lr"])
    best_run = next(r for r in trials if r.info.run_id == parent.data.tags["best_run"])
    assert float(best_run.data.params["optuna.lr"]) == pytest.approx(best.params["lr"])
    assert best_run.data.metrics["objective"] == pytest.approx(best.value)
    assert best_run.data.metrics["final_val_approx_acc"] == pytest.approx(best.value)
    import mlflow

    names = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "param_importances.png", "best_params.json", "trials.csv"} <= names
    assert sorted(p.name for p in (store / "s").glob("trial-*")) == [f"trial-{i}" for i in range(5)]


def test_failed_trial_is_recorded_and_the_study_continues(study_runs: dict[str, Any], store: Path) -> None:
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{store}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert states[1] == "FAIL" and states.count("COMPLETE") == 4
    assert "diverged" in study.trials[1].user_attrs["fail_reason"]
    run = next(r for r in _runs("tags.`optuna.trial_number` = '1'"))
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["error"]


def test_rerun_resumes_the_study_under_the_same_parent(study_runs: dict[str, Any], store: Path) -> None:
    assert "this process ran 1 trials" in study_runs["second"]
    assert "5 trials (4 complete, 1 fail)" in study_runs["second"]
    parents = _runs("tags.`coreg.study` = 's' and tags.`coreg.role` = 'study'")
    assert len(parents) == 1 and parents[0].data.tags["n_trials_target"] == "4"


def test_register_champion_and_challenger(study_runs: dict[str, Any], store: Path, digits: Any) -> None:
    import mlflow

    res = CliRunner().invoke(main, ["register", "--experiment", "coreg-tune", "--study", "s", "--metric",
                                    "final_val_approx_acc", "--name", "digits-student"])
    assert res.exit_code == 0, res.output
    assert "models:/digits-student@champion" in res.output
    client = mlflow.MlflowClient()
    champ = client.get_model_version_by_alias("digits-student", "champion")
    chall = client.get_model_version_by_alias("digits-student", "challenger")
    trials = [r for r in _runs("tags.`coreg.study` = 's' and tags.`coreg.role` = 'trial'")
              if r.info.status == "FINISHED"]
    ranked = sorted(trials, key=lambda r: (-r.data.metrics["final_val_approx_acc"], r.info.start_time))
    assert champ.run_id == ranked[0].info.run_id and chall.run_id == ranked[1].info.run_id
    assert champ.tags["data_fingerprint"] == digits.fingerprint
    assert champ.tags["annotation_source"] == "flip"
    assert float(champ.tags["metric.final_val_approx_acc"]) == pytest.approx(
        ranked[0].data.metrics["final_val_approx_acc"], rel=1e-4)
    # Registering again reuses the versions.
    again = CliRunner().invoke(main, ["register", "--experiment", "coreg-tune", "--study", "s", "--metric",
                                      "final_val_approx_acc", "--name", "digits-student"])
    assert f"version {champ.version} " in again.output
    assert len(client.search_model_versions("name = 'digits-student'")) == 2

    model = mlflow.pyfunc.load_model("models:/digits-student@champion")
    images = digits.test.images[:6]
    pred = np.asarray(model.predict(images))
    assert pred.shape == (6,) and ((0 <= pred) & (pred < len(digits.classes))).all()
    probs = np.asarray(model.predict(images, params={"output": "probs"}))
    assert probs.shape == (6, len(digits.classes))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), pred)


def test_register_needs_only_the_study(study_runs: dict[str, Any], store: Path) -> None:
    """`coreg tune` stored the experiment and the selection metric on the study: register reads them."""
    import mlflow

    attrs = optuna.load_study(study_name="s", storage=f"sqlite:///{store}/optuna.db").user_attrs
    assert attrs["experiment"] == "coreg-tune" and attrs["register_metric"] == "final_val_approx_acc"
    assert "coreg register --study s --storage" in study_runs["first"]  # the hint printed by tune
    res = CliRunner().invoke(main, ["register", "--study", "s", "--storage", f"sqlite:///{store}/optuna.db",
                                    "--name", "short-student"])
    assert res.exit_code == 0, res.output
    assert "(final_val_approx_acc = " in res.output
    champ = mlflow.MlflowClient().get_model_version_by_alias("short-student", "champion")
    trials = [r for r in _runs("tags.`coreg.study` = 's' and tags.`coreg.role` = 'trial'")
              if r.info.status == "FINISHED"]
    best = max(trials, key=lambda r: (r.data.metrics["final_val_approx_acc"], -r.info.start_time))
    assert champ.run_id == best.info.run_id
    # The flags still override the study's values.
    res = CliRunner().invoke(main, ["register", "--study", "s", "--storage", f"sqlite:///{store}/optuna.db",
                                    "--metric", "final_val_covering_rate", "--name", "short-student-cov"])
    assert res.exit_code == 0 and "(final_val_covering_rate = " in res.output, res.output


def test_register_without_a_source_of_settings_is_one_line(store: Path, study_runs: dict[str, Any]) -> None:
    storage = f"sqlite:///{store}/optuna.db"
    optuna.create_study(study_name="bare", storage=storage)  # not made by coreg tune: no attributes
    cases = [
        (["--name", "m"], "give --study S"),
        (["--study", "bare", "--storage", storage, "--name", "m"], "does not record its MLflow experiment"),
        (["--study", "bare", "--storage", storage, "--experiment", "coreg-tune", "--name", "m"],
         "does not record its selection metric"),
        (["--study", "nope", "--storage", storage, "--name", "m"], "'nope' is not in Optuna storage"),
        (["--study", "s", "--storage", f"sqlite:///{store}/missing.db", "--name", "m"], "is not in Optuna storage"),
    ]
    for args, message in cases:
        res = CliRunner().invoke(main, ["register", *args])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert res.output.count("\n") == 1 and res.output.startswith("Error: ")
    assert not (store / "missing.db").exists()  # looking a study up creates no database


def test_register_errors_are_one_line(store: Path, study_runs: dict[str, Any]) -> None:
    res = CliRunner().invoke(main, ["register", "--experiment", "nope", "--metric", "x", "--name", "m"])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = CliRunner().invoke(main, ["register", "--experiment", "coreg-tune", "--metric", "no_such_metric",
                                    "--name", "m"])
    assert res.exit_code == 2 and "final_val_approx_acc" in res.output  # lists the logged metrics


def test_two_worker_processes_share_one_study(store: Path, annotation: str, study_runs: dict[str, Any]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db",
               MLFLOW_REGISTRY_URI=f"sqlite:///{store}/mlflow.db")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, *tune_args(store, annotation, "w", 2),
                               "--sampler-seed", str(i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    ran = [int(re.search(r"this process ran (\d+) trials", o).group(1)) for o in outs]  # type: ignore[union-attr]
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{store}/optuna.db")
    assert len(study.trials) == sum(ran)
    assert 2 <= len(study.trials) <= 3  # a shared budget of 2; a race may add one trial
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials}) == sum(1 for r in ran if r)
    parents = _runs("tags.`coreg.study` = 'w' and tags.`coreg.role` = 'study'")
    assert len(parents) == 1
    trials = _runs("tags.`coreg.study` = 'w' and tags.`coreg.role` = 'trial'")
    assert len(trials) == sum(ran)
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}


def _fresh_study(store: Path, name: str) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=f"sqlite:///{store}/optuna.db", direction="maximize")


def test_parent_election_waits_for_the_worker_holding_the_claim(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that loses the claim uses the parent the elector records, and never makes its own."""
    import threading

    import coreg.tuning.study as st

    study = _fresh_study(store, "elect-wait")
    claim = study._storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE],  # another elector's claim
                                            study_name="elect-wait.mlflow-parent-claim")
    tracking = st.MlflowStudyTracking(experiment="coreg-tune", study_name="elect-wait")
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(tracking.elect_parent(study, {"p": 1})))
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not got  # blocked on the claim, no parent of its own
    winner = tracking._create_parent({"p": 0})
    study.set_user_attr(st.PARENT_ATTR, winner)
    study._storage.delete_study(claim)
    waiter.join(30)
    assert got == [winner]
    assert [r.info.run_id for r in _runs("tags.`coreg.study` = 'elect-wait'")] == [winner]
    # a worker started later reads the record without an election
    assert st.MlflowStudyTracking(experiment="coreg-tune", study_name="elect-wait").elect_parent(study, {}) == winner


def test_parent_election_survives_a_dead_elector_and_a_race(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import coreg.tuning.study as st

    monkeypatch.setattr(st, "PARENT_CLAIM_WAIT_S", 1.0)
    study = _fresh_study(store, "elect-dead")
    study._storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], study_name="elect-dead.mlflow-parent-claim")
    tracking = st.MlflowStudyTracking(experiment="coreg-tune", study_name="elect-dead")
    run_id = tracking.elect_parent(study, {})  # the claim's owner never records a parent: claim dropped
    assert study.user_attrs[st.PARENT_ATTR] == run_id
    names = {s.study_name for s in optuna.get_all_study_summaries(study._storage)}
    assert "elect-dead.mlflow-parent-claim" not in names

    # four workers of a fresh study elect at the same moment: one parent, all agree on it
    study = _fresh_study(store, "elect-race")
    barrier = threading.Barrier(4)
    got: list[str] = []

    def worker() -> None:
        barrier.wait()
        got.append(st.MlflowStudyTracking(experiment="coreg-tune", study_name="elect-race").elect_parent(study, {}))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 4 and len(set(got)) == 1
    assert [r.info.run_id for r in _runs("tags.`coreg.study` = 'elect-race'")] == got[:1]


def test_pruned_trial_run_is_killed(store: Path, study_runs: dict[str, Any]) -> None:
    from coreg._cli.train import build_train_config
    from coreg.engine.trainer import FitResult
    from coreg.tuning.study import MlflowStudyTracking, TuneConfig, run_study

    lrs = [0.05, 0.06, 0.001]

    def train(*, cfg: Any, out_dir: Path, tracker: Any, callbacks: Any) -> FitResult:
        hist = []
        for epoch in range(cfg.epochs):  # a fake trainer: the metric grows with the lr
            hist.append({"val_approx_acc": cfg.lr * 10 * (epoch + 1)})
            tracker.log_metrics(hist[-1], step=epoch)
            for cb in callbacks:
                cb(epoch, hist[-1])
        return FitResult(metrics=hist[-1], history=hist, student=None, out_dir=out_dir)  # type: ignore[arg-type]

    cfg = TuneConfig(n_trials=3, storage=f"sqlite:///{store}/optuna.db", study_name="p", pruner="median")
    summary = run_study(cfg, build_config=lambda o: build_train_config("coreg", overrides=list(o), epochs=4, warmup=1),
                        train=train, suggest=lambda m, t: [f"lr={lrs[t.number]!r}"], out_dir=store / "p",
                        tracking=MlflowStudyTracking(experiment="coreg-tune", study_name="p"))
    assert summary.counts == {"COMPLETE": 2, "PRUNED": 1}
    run = next(r for r in _runs("tags.`coreg.study` = 'p' and tags.`optuna.trial_number` = '2'"))
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
    parent = _runs("tags.`coreg.study` = 'p' and tags.`coreg.role` = 'study'")[0]
    assert parent.data.metrics["n_pruned"] == 1 and parent.data.tags["best_trial"] == "1"


def test_val_acc_metric_needs_gold_labels(store: Path, annotation: str) -> None:
    res = CliRunner().invoke(main, [*tune_args(store, annotation, "g", 1), "--metric", "val_acc"])
    assert res.exit_code == 2 and "--shots" in res.output
