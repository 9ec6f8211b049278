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
                             "--set", "method.moco_queue=512", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output
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
