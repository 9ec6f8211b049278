"""`coreg train` end to end on digits: MLflow params, per-epoch metrics, artifacts, the student model."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner

from coreg.cli import main


def test_train_two_epochs_tracked(tmp_path) -> None:
    runner = CliRunner()
    ann = tmp_path / "a.npz"
    assert runner.invoke(main, ["simulate", "--kind", "instance", "--data", "digits", "--out", str(ann)]).exit_code == 0
    out = tmp_path / "run"
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--epochs", "2", "--warmup", "1",
                             "--set", "model.name=tiny_cnn", "--set", "method.batch_size=128",
                             "--set", "method.moco_queue=512", "--set", "warmup_patience=0",
                             "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and "for 2 epochs (1 warm-up)" in r.output
    # the instance annotator scores the test split too: the student is compared with it there
    assert "annotator test accuracy" in r.output and "on the same test split" in r.output
    assert ("beats it by" in r.output) or ("trails it by" in r.output) or ("ties it" in r.output)
    run_id = __import__("json").loads((out / "mlflow_run.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.data.params["method.lambda_u"] == "1.0" and run.data.params["epochs"] == "2"
    hist = mlflow.MlflowClient().get_metric_history(run_id, "test_acc")
    assert [m.step for m in hist] == [0, 1]
    for key in ("net1_loss", "lr", "val_approx_acc", "test_acc_net1", "test_acc_net2", "net1_division_precision",
                "annotator_test_acc", "annotator_train_acc", "final_gain_vs_annotator", "net1_p_class_frac_min",
                "net1_train_classes_predicted", "net1_pl_acc_labelled", "net1_p_count_c0"):
        assert key in run.data.metrics, key
    m = run.data.metrics
    assert m["final_gain_vs_annotator"] == pytest.approx(m["final_test_acc"] - m["annotator_test_acc"])
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"config.yaml", "student.pt", "accuracy_curve.png", "confusion_matrix.png", "checkpoint"} <= arts
    model = mlflow.pyfunc.load_model(run.data.tags["student_model_uri"])
    from coreg.data import load_dataset

    x = load_dataset("digits").test.images[:5]
    pred = model.predict(x)
    probs = model.predict(x, params={"output": "probs"})
    assert pred.shape == (5,) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert (probs.argmax(1) == pred).all()


def test_train_bad_inputs(tmp_path) -> None:
    runner = CliRunner()
    ann = tmp_path / "a.npz"
    runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", str(ann)])
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--method", "nope", "--no-track"])
    assert r.exit_code == 2 and "unknown method 'nope'" in r.output
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--set", "method.bogus=1",
                             "--no-track"])
    assert r.exit_code == 2 and "unknown config key 'method.bogus'" in r.output
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--split-seed", "3", "--no-track"])
    assert r.exit_code == 2 and "other data" in r.output


def test_kd_mode_without_scores_is_one_line(tmp_path) -> None:
    runner = CliRunner()
    ann = tmp_path / "a.npz"
    runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", str(ann)])
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--epochs", "1", "--warmup", "1",
                             "--set", "model.name=tiny_cnn", "--set", "method.soft_labels=true", "--no-track",
                             "--out", str(tmp_path / "run"), "--no-progress"])
    assert r.exit_code == 2 and "needs an annotation with scores" in r.output and "Traceback" not in r.output


def _train_args(data: str, ann: str, out: str, *extra: str) -> list[str]:
    return ["train", "--data", data, "--annotations", ann, "--epochs", "1", "--warmup", "1",
            "--set", "model.name=tiny_cnn", "--set", "method.batch_size=8", "--set", "method.moco_queue=16",
            "--out", out, *extra]


def test_no_progress_run_is_quiet(tmp_path, image_folder, monkeypatch) -> None:
    """--no-progress hides every bar (image decoding, epochs, MLflow's artifact bars) and no warning shows."""
    import logging
    import warnings

    import coreg.data.datasets as datasets

    monkeypatch.setattr(datasets, "DECODE_BAR_MIN", 1)  # small folders show a decode bar too
    runner = CliRunner()
    ann = str(tmp_path / "a.npz")
    assert runner.invoke(main, ["simulate", "--kind", "flip", "--data", image_folder, "--out", ann]).exit_code == 0
    # Without --no-progress the bars are there (so the assertions below can fail).
    loud = runner.invoke(main, _train_args(image_folder, ann, str(tmp_path / "loud"), "--no-track"))
    assert loud.exit_code == 0, loud.output
    assert "decode train" in loud.stderr and "epoch 0" in loud.stderr

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet = runner.invoke(main, _train_args(image_folder, ann, str(tmp_path / "quiet"), "--no-progress"))
    finally:
        mlflow_logger.removeHandler(handler)
    assert quiet.exit_code == 0, quiet.output
    assert "MLflow run" in quiet.output  # tracked: the student was logged as an MLflow model
    for bar_text in ("decode", "epoch 0", "it/s", "%|", "Downloading artifacts"):
        assert bar_text not in quiet.stderr, quiet.stderr
    user_warnings = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert user_warnings == []
    assert [r.getMessage() for r in records] == []  # e.g. MLflow's "Passing a Python object as python_model"


def _tiny(ann: str, *extra: str) -> list[str]:
    # A fixed learning-rate period and warm-up: epochs may then grow on --resume (see coreg.engine.resume).
    return ["train", "--data", "digits", "--annotations", ann, "--warmup", "1", "--set", "model.name=tiny_cnn",
            "--set", "method.batch_size=128", "--set", "method.moco_queue=512", "--set", "lr_period=800",
            "--set", "warmup_patience=0",
            "--no-progress", *extra]


def test_each_run_gets_a_folder_and_resume_continues_the_latest(tmp_path, monkeypatch) -> None:
    import json

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", "a.npz"]).exit_code == 0
    for _ in range(2):  # the same command twice: two runs, nothing refused
        r = runner.invoke(main, _tiny("a.npz", "--epochs", "1"))
        assert r.exit_code == 0, r.output
    root = tmp_path / "outputs" / "train" / "digits-coreg-s0"
    first, second = sorted((d for d in root.iterdir()), key=lambda d: d.stat().st_mtime)
    ids = [json.loads((d / "mlflow_run.json").read_text())["run_id"] for d in (first, second)]
    assert ids[0] != ids[1] and all((d / "student.pt").exists() for d in (first, second))
    client = mlflow.MlflowClient()
    # The second run's process "died" after its last checkpoint: MLflow still says RUNNING.
    client.update_run(ids[1], status="RUNNING")
    r = runner.invoke(main, _tiny("a.npz", "--resume", "--epochs", "2"))
    assert r.exit_code == 0, r.output
    assert f"resuming outputs/train/digits-coreg-s0/{second.name} after epoch 1 of 2 (the latest run of " \
           "digits-coreg-s0)" in r.output
    run = client.get_run(ids[1])  # the same MLflow run, continued and finished
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(ids[1], "test_acc")] == [0, 1]
    assert run.data.params["epochs"] == "1" and run.data.tags["coreg.epochs_extended"] == "1 -> 2"
    assert len(list(root.iterdir())) == 2 and client.get_run(ids[0]).info.status == "FINISHED"
    # Changed hyper-parameters are refused, naming the keys; nothing is touched.
    before = (second / "checkpoint.pt").read_bytes()
    r = runner.invoke(main, _tiny("a.npz", "--resume", "--epochs", "3", "--set", "method.lambda_u=2.0"))
    assert r.exit_code == 2 and "changed hyper-parameters: method.lambda_u (1.0 -> 2.0)" in r.output
    assert (second / "checkpoint.pt").read_bytes() == before and client.get_run(ids[1]).info.status == "FINISHED"


def test_a_run_left_running_by_a_dead_process_is_marked_killed(tmp_path) -> None:
    import json

    from coreg.tracking.mlflow import setup_mlflow

    runner = CliRunner()
    ann = str(tmp_path / "a.npz")
    assert runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", ann]).exit_code == 0
    client = mlflow.MlflowClient()
    exp = setup_mlflow("coreg-train").get_experiment_by_name("coreg-train")
    dead = client.create_run(exp.experiment_id).info.run_id  # killed before its first checkpoint
    out = tmp_path / "run"
    out.mkdir()
    (out / "mlflow_run.json").write_text(json.dumps({"run_id": dead}))
    r = runner.invoke(main, _tiny(ann, "--epochs", "1", "--out", str(out)))
    assert r.exit_code == 0, r.output
    assert client.get_run(dead).info.status == "KILLED"
    new = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    assert new != dead and client.get_run(new).info.status == "FINISHED"


def test_agreement_gate_explains_a_run_that_stayed_a_warm_up(tmp_path) -> None:
    runner = CliRunner()
    ann = tmp_path / "a.npz"
    assert runner.invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", str(ann)]).exit_code == 0
    r = runner.invoke(main, ["train", "--data", "digits", "--annotations", str(ann), "--epochs", "3", "--warmup", "1",
                             "--set", "model.name=tiny_cnn", "--set", "method.batch_size=128",
                             "--set", "method.moco_queue=512", "--set", "warmup_patience=1",
                             "--set", "warmup_min_delta=1.0", "--set", "warmup_min_after=0",
                             "--set", "warmup_min_agreement=1.0", "--out", str(tmp_path / "run"), "--no-progress",
                             "--no-track"])
    assert r.exit_code == 0, r.output
    # a plateau at once (min_delta 1) but the two networks never agree on every held-out image
    assert "for 3 epochs (3 warm-up, adaptive, the whole run: the networks agreed on at most" in r.output
    assert "below warmup_min_agreement=1.0" in r.output
