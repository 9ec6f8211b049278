"""The MLflow project pipeline: steps, the main chain in-process, reuse of finished steps, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

TINY = {"data": "digits", "annotator": "instance", "method": "coreg", "trial_epochs": 2, "trial_warmup": 1,
        "epochs": 2, "warmup": 1, "overrides": "model.name=tiny_cnn", "model_name": "test-student"}


def _client():
    from mlflow.tracking import MlflowClient

    from coreg.tracking.mlflow import setup_mlflow

    setup_mlflow()
    return MlflowClient()


def _all_runs(experiment_id: str) -> list:
    return _client().search_runs([experiment_id], max_results=1000)


def test_param_equal_accepts_shell_quoted_values() -> None:
    from pipelines._common import param_equal

    assert param_equal("model.width=0.25", "model.width=0.25")
    assert param_equal("'model.width=0.25 method.batch_size=64'", "model.width=0.25 method.batch_size=64")
    assert param_equal("''", "")
    assert not param_equal(None, "x")
    assert not param_equal("3", 4)


def test_split_overrides_rejects_words_without_equals() -> None:
    from coreg.errors import CoregError
    from pipelines._common import join_overrides, split_overrides

    assert split_overrides("lr=0.1 'a.b=x y'") == ["lr=0.1", "a.b=x y"]
    assert split_overrides(join_overrides(["lr=0.1", "a.b=x y"])) == ["lr=0.1", "a.b=x y"]
    with pytest.raises(CoregError, match="not key=value"):
        split_overrides("lr")


def test_every_entry_point_has_a_step_module_with_matching_parameters() -> None:
    import importlib
    import inspect

    from pipelines.main import STEP_MODULES, entry_point_specs

    specs = entry_point_specs()
    assert set(specs) == {*STEP_MODULES, "main"}
    for entry, module in STEP_MODULES.items():
        sig = inspect.signature(importlib.import_module(module).run)
        assert set(sig.parameters) - {"run_id"} == set(specs[entry]), entry


def test_main_in_process_runs_the_chain_then_reuses_it(tmp_path: Path) -> None:
    from pipelines.main import run_pipeline

    kw = {**TINY, "runner": "in-process", "storage": f"sqlite:///{tmp_path / 'optuna.db'}"}
    first = run_pipeline(**kw, n_trials=1, out_dir=tmp_path / "out")
    assert [s.entry_point for s in first.steps] == ["simulate", "tune", "train", "register", "export"]
    assert not any(s.reused for s in first.steps)
    onnx = first.onnx_path
    assert onnx is not None and onnx.exists() and onnx.parent == (tmp_path / "out" / "onnx").resolve()
    assert (onnx.parent / "preprocess.json").exists() and (onnx.parent / "labels.json").exists()
    assert first.registered == ("test-student", "1")

    client = _client()
    sim, tune, train = (first.step(e) for e in ("simulate", "tune", "train"))
    # outputs travel as artifact URIs; the train step got the simulate step's annotation file
    assert train.outputs["student"] == f"runs:/{train.run_id}/student.pt"
    assert client.get_run(train.run_id).data.params["annotations"] == sim.outputs["annotations"]
    # trials are nested under the tune step's run; every step is a child of main
    trials = [r for r in _all_runs(first.experiment_id) if r.data.tags.get("mlflow.parentRunId") == tune.run_id]
    assert len(trials) == 1
    for s in first.steps:
        assert client.get_run(s.run_id).data.tags["mlflow.parentRunId"] == first.main_run_id
        assert client.get_run(s.run_id).info.status == "FINISHED"
    mv = client.get_model_version_by_alias("test-student", "champion")
    assert str(mv.version) == "1" and mv.run_id == train.run_id

    # same parameters and code: nothing runs again (only a new main run appears)
    n_before = len(_all_runs(first.experiment_id))
    again = run_pipeline(**kw, n_trials=1, out_dir=tmp_path / "out")
    assert all(s.reused for s in again.steps)
    assert [s.run_id for s in again.steps] == [s.run_id for s in first.steps]
    assert len(_all_runs(first.experiment_id)) == n_before + 1
    assert again.registered == ("test-student", "1")

    # no tuning and another epoch budget: the annotation is reused, training onwards runs again
    third = run_pipeline(**{**kw, "epochs": 3}, n_trials=0, out_dir=tmp_path / "out")
    assert [(s.entry_point, s.reused) for s in third.steps] == [
        ("simulate", True), ("train", False), ("register", False), ("export", False)]
    assert third.registered == ("test-student", "2")
    assert client.get_run(third.step("train").run_id).data.params["overrides"] == "model.name=tiny_cnn"


def test_a_failed_step_is_not_reused(tmp_path: Path) -> None:
    from coreg.errors import CoregError
    from pipelines._common import experiment_id
    from pipelines.main import StepRunner

    exp = experiment_id("coreg")
    parent = _client().create_run(exp).info.run_id
    runner = StepRunner(experiment_id=exp, parent_run_id=parent, in_process=True)
    with pytest.raises(CoregError):
        runner.step("simulate", {"data": "no-such-dataset"})
    failed = [r for r in _all_runs(exp) if r.data.tags.get("coreg.entry_point") == "simulate"]
    assert len(failed) == 1 and failed[0].info.status == "FAILED"
    assert runner.find_finished("simulate", runner.full_params("simulate", {"data": "no-such-dataset"})) is None


def test_step_command_bad_input_is_one_line_exit_2() -> None:
    from pipelines.simulate import cli

    res = CliRunner().invoke(cli, ["--data", "no-such-dataset"])
    assert res.exit_code == 2
    assert res.output.strip().startswith("Error: unknown dataset") and len(res.output.strip().splitlines()) == 1
    assert "Traceback" not in res.output


def test_main_command_import_without_jsonl_is_one_line_exit_2() -> None:
    from pipelines.main import cli

    res = CliRunner().invoke(cli, ["--annotator", "import", "--in-process"])
    assert res.exit_code == 2
    assert res.output.strip().splitlines()[-1] == "Error: --annotator import needs --jsonl FILE"


def test_register_step_refuses_both_or_neither_source() -> None:
    from pipelines.register import cli

    res = CliRunner().invoke(cli, [])
    assert res.exit_code == 2 and "exactly one of --source" in res.output


def test_mlflow_run_simulate_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's own runner: `mlflow run . -e simulate --env-manager local` logs into the run it creates."""
    import os
    import subprocess
    import sys

    from pipelines._common import PROJECT_ROOT

    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    mlflow_exe = Path(bin_dir) / "mlflow"
    cmd = [str(mlflow_exe) if mlflow_exe.exists() else "mlflow", "run", str(PROJECT_ROOT), "-e", "simulate",
           "--env-manager", "local", "--experiment-name", "projects", "-P", "data=digits", "-P", "kind=flip",
           "-P", "q=0.2", "-P", "eta=0.1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = _client()
    exp = client.get_experiment_by_name("projects")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "simulate"
    assert run.data.tags["coreg.entry_point"] == "simulate" and run.data.tags["coreg.step_complete"] == "true"
    assert run.data.params["q"] == "0.2" and run.data.params["kind"] == "flip"
    uri = run.data.tags["coreg.out.annotations"]
    assert uri == f"runs:/{run.info.run_id}/annotation/annotation.npz"
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "dl")))
    from coreg.data import Annotation

    ann = Annotation.load(local)
    assert ann.annotator["kind"] == "flip" and ann.num_classes == 10
    stats = json.loads(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/annotation_stats.json"))
    assert stats["num_samples"] == ann.num_samples
