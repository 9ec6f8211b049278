"""``coreg annotate`` and ``coreg import`` through click's CliRunner (coreg-tiny, offline)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from coreg.cli import main
from coreg.data import load_annotation_for


def _annotate(tmp_path: Path, *extra: str) -> Any:
    args = ["annotate", "--data", "digits", "--model", "coreg-tiny", "--pretrained", "none",
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "512", "--out", str(tmp_path / "ann.npz"),
            *extra]
    return CliRunner().invoke(main, args)


def test_annotate_no_track(tmp_path: Path, digits: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = _annotate(tmp_path, "--no-track", "--mode", "topk", "--k", "2")
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "avg set size 2.000" in res.output
    ann = load_annotation_for(tmp_path / "ann.npz", digits)
    assert (ann.candidates.sum(1) == 2).all()
    assert ann.annotator["model"] == "coreg-tiny" and ann.annotator["k"] == 2
    assert ann.test_scores.shape == (len(digits.test), 10)
    assert not (tmp_path / "mlflow.db").exists()


def test_annotate_tracked_run_has_metrics_and_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    res = _annotate(tmp_path, "--experiment", "ann-test")
    assert res.exit_code == 0, res.output
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ann-test")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.run_id in res.output
    assert {"avg_set_size", "eta", "zero_shot_train_acc", "zero_shot_avg_train_acc", "zero_shot_test_acc",
            "zero_shot_avg_test_acc"} <= set(run.data.metrics)
    assert run.data.params["model"] == "coreg-tiny" and run.data.params["mode"] == "multi_prompt"
    assert run.data.params["templates"] == "paper"
    files = {f.path for d in ("", "figures", "annotation") for f in client.list_artifacts(run.info.run_id, d)}
    assert {"annotation/ann.npz", "figures/set_size_hist.png", "figures/per_class_eta.png",
            "figures/per_template_acc.png", "annotator.json"} <= files


def test_annotate_class_names_yaml_and_template_file(tmp_path: Path, digits: Any) -> None:
    names = tmp_path / "names.yaml"
    names.write_text("".join(f"{i}: ['the digit {i}', 'number {i}']\n" for i in range(10)))
    tpl = tmp_path / "t.txt"
    tpl.write_text("a handwritten {}\na photo of {}\n")
    res = _annotate(tmp_path, "--no-track", "--class-names", str(names), "--templates", str(tpl),
                    "--mode", "prob_thres", "--threshold", "0.2")
    assert res.exit_code == 0, res.output
    ann = load_annotation_for(tmp_path / "ann.npz", digits)
    assert ann.annotator["class_names"][3] == ["the digit 3", "number 3"]
    assert ann.annotator["templates_list"] == ["a handwritten {}", "a photo of {}"]
    assert ann.template_preds.shape[1] == 2


@pytest.mark.parametrize(("extra", "match"), [
    (["--mode", "multi_prompt", "--k", "3"], "does not take k"),
    (["--mode", "bogus"], "unknown candidate mode 'bogus'"),
    (["--templates", "nope"], "unknown template set 'nope'"),
    (["--pretrained", "openai", "--model", "ViT-B-32"], "could not be downloaded"),
])
def test_annotate_user_errors_are_one_line(tmp_path: Path, extra: list[str], match: str) -> None:
    res = _annotate(tmp_path, "--no-track", *extra)
    assert res.exit_code == 2
    err = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and match in err[0], res.output
    assert not (tmp_path / "ann.npz").exists()


def test_annotate_class_names_mismatch(tmp_path: Path) -> None:
    names = tmp_path / "names.yaml"
    names.write_text("0: zero\n1: one\nten: ten\n")
    res = _annotate(tmp_path, "--no-track", "--class-names", str(names))
    assert res.exit_code == 2
    assert "missing classes ['2'," in res.output and "extra classes ['ten']" in res.output


def test_import_cli_round_trip(tmp_path: Path, digits: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps({"image": i, "candidates": [str(y), str((y + 1) % 10)], "scores": {str(y): 0.9}})
             for i, y in zip(digits.train.ids, digits.train.labels)]
    src = tmp_path / "llava.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "imp.npz"
    res = CliRunner().invoke(main, ["import", "--data", "digits", "--jsonl", str(src), "--source-model", "llava",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "avg set size 2.000" in res.output and "eta 0.0000" in res.output
    ann = load_annotation_for(out, digits)
    assert ann.annotator == {"kind": "import", "source": str(src), "source_model": "llava",
                             "source_sha256": ann.annotator["source_sha256"]}
    assert np.array_equal(ann.single_labels(), digits.train.labels)


def test_import_cli_error_writes_nothing(tmp_path: Path, digits: Any) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"image": 0, "candidates": ["0"]}\n{"image": 0, "candidates": ["1"]}\n')
    out = tmp_path / "imp.npz"
    res = CliRunner().invoke(main, ["import", "--data", "digits", "--jsonl", str(src), "--no-track",
                                    "--out", str(out)])
    assert res.exit_code == 2
    assert "bad.jsonl:2:" in res.output and "listed twice" in res.output
    assert not out.exists()
