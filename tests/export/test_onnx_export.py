"""ONNX export: parity with torch, dynamic batch, metadata, sidecars, int8, and the ``coreg export`` CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from coreg.cli import main
from coreg.errors import CoregError
from coreg.export import export_student, normalize_images, onnx_accuracy, quantize_int8, read_metadata
from coreg.export import onnx as onnx_mod
from coreg.export.onnx import ort_session, run_onnx
from coreg.models import create_model
from coreg.student import Student


def _student(bundle, *, nets: int = 2, seed: int = 0, source: dict | None = None) -> Student:
    torch.manual_seed(seed)
    ms = [create_model("tiny_cnn", num_classes=bundle.num_classes, in_channels=bundle.spec.channels,
                       setting="32x32", width=1.0, proj_dim=8).eval() for _ in range(nets)]
    # Non-trivial BN statistics so eval-mode BN is part of what parity checks.
    for m in ms:
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return Student(nets=ms, classes=list(bundle.classes), spec=bundle.spec, data=bundle.describe(),
                   source=source or {"method": "coreg", "run_id": None})


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    st = _student(digits)
    out = tmp_path_factory.mktemp("export") / "student.onnx"
    report = export_student(st, out, parity_images=digits.test.images[:32])
    return st, report


def test_ensemble_parity_within_tolerance(exported):
    _, report = exported
    assert report.path.exists() and report.parity.passed
    assert report.parity.max_abs_diff <= 1e-3
    assert report.parity.top1_agreement == 1.0
    assert report.parity.num_images == 32 and report.parity.images == "given"
    saved = json.loads(report.parity_path.read_text())
    assert saved["parity"]["max_abs_diff"] == report.parity.max_abs_diff
    assert report.parity_path.name == "student.onnx.parity.json"


def test_dynamic_batch_matches_torch(exported, digits):
    st, report = exported
    sess = ort_session(report.path, threads=1)
    module = st.eval_module()
    for b in (1, 5):
        x = normalize_images(digits.test.images[40: 40 + b], st.spec)
        got = sess.run(None, {"input": x})[0]
        with torch.no_grad():
            ref = module(torch.from_numpy(x)).numpy()
        assert got.shape == (b, 10)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_metadata_round_trip_and_sidecars(exported):
    st, report = exported
    model = onnx.load(str(report.path))
    onnx.checker.check_model(model)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    meta = read_metadata(report.path)
    assert meta["coreg.format"] == "coreg-onnx-v1"
    assert json.loads(meta["coreg.classes"]) == st.classes
    spec = json.loads(meta["coreg.spec"])
    assert spec == {"size": 16, "channels": 1, "mean": list(st.spec.mean), "std": list(st.spec.std),
                    "resize_rule": "bilinear"}
    assert json.loads(meta["coreg.source"])["method"] == "coreg"
    assert json.loads(meta["coreg.source"])["members"] == 2
    assert meta["coreg.data_fingerprint"] == st.data["fingerprint"]
    assert json.loads(report.labels_path.read_text()) == st.classes
    pre = json.loads(report.preprocess_path.read_text())
    assert {k: pre[k] for k in spec} == spec and pre["layout"] == "NCHW"


def test_normalize_matches_training_eval_transform(digits):
    from coreg.data.transforms import Augmenter, to_tensor_images

    imgs = digits.test.images[:8]
    ref = Augmenter(digits.spec).test(to_tensor_images(imgs)).numpy()
    np.testing.assert_array_equal(normalize_images(imgs, digits.spec), ref)


def test_single_exports_first_network(digits, tmp_path):
    st = _student(digits, seed=1)
    report = export_student(st, tmp_path / "single.onnx", single=True, parity_images=digits.test.images[:16])
    assert report.single and report.parity.passed
    x = normalize_images(digits.test.images[:4], st.spec)
    with torch.no_grad():
        ref = st.nets[0](torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(run_onnx(ort_session(report.path), x), ref, atol=1e-4)
    assert json.loads(read_metadata(report.path)["coreg.source"])["members"] == 1


def test_parity_failure_raises_and_keeps_old_file(digits, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous good model")
    real = onnx_mod.check_parity

    def broken(*a, **kw):
        r = real(*a, **kw)
        r.max_abs_diff, r.passed = 1.0, False
        return r

    monkeypatch.setattr(onnx_mod, "check_parity", broken)
    with pytest.raises(CoregError, match="parity check failed"):
        export_student(_student(digits, nets=1), out, parity_images=digits.test.images[:4], overwrite=True)
    assert out.read_bytes() == b"previous good model"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.onnx")]  # no temp left behind
    assert json.loads((tmp_path / "m.onnx.parity.json").read_text())["parity"]["passed"] is False


def test_bad_parity_images_rejected(digits, tmp_path):
    with pytest.raises(CoregError, match="parity images"):
        export_student(_student(digits, nets=1), tmp_path / "m.onnx",
                       parity_images=np.zeros((2, 8, 8, 1), dtype=np.uint8))


@pytest.fixture(scope="module")
def trained(digits):
    """A tiny CNN trained briefly on digits (accuracy well above chance), so int8 is meaningful."""
    torch.manual_seed(0)
    net = create_model("tiny_cnn", num_classes=10, in_channels=1, setting="32x32", width=2.0, proj_dim=8)
    x = torch.from_numpy(normalize_images(digits.train.images, digits.spec))
    y = torch.from_numpy(digits.train.labels)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(0)
    net.train()
    for _ in range(6):
        for idx in torch.randperm(len(x), generator=g).split(128):
            loss = torch.nn.functional.cross_entropy(net(x[idx])[0], y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return Student(nets=[net], classes=list(digits.classes), spec=digits.spec, data=digits.describe(),
                   source={"method": "ce"})


def test_int8_runs_and_agrees_with_fp32(trained, digits, tmp_path):
    fp32 = export_student(trained, tmp_path / "s.onnx", parity_images=digits.test.images[:16]).path
    int8 = quantize_int8(fp32, tmp_path / "s.int8.onnx", calibration_images=digits.train.images[:256],
                         spec=digits.spec)
    assert json.loads(read_metadata(int8)["coreg.classes"]) == trained.classes
    assert "coreg.quantization" in read_metadata(int8)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    x = normalize_images(digits.test.images, digits.spec)
    a, b = run_onnx(ort_session(fp32), x), run_onnx(ort_session(int8), x)
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95
    acc32 = onnx_accuracy(fp32, digits.test.images, digits.test.labels)
    acc8 = onnx_accuracy(int8, digits.test.images, digits.test.labels)
    assert acc32 > 0.4  # chance is 0.1
    assert abs(acc32 - acc8) <= 0.03


def test_cli_export_no_track(digits, tmp_path):
    st = _student(digits, source={"method": "coreg", "run_id": "0" * 32})
    st.save(tmp_path / "student.pt")
    out = tmp_path / "out" / "student.onnx"
    r = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "student.pt"), "--out", str(out), "--no-track"])
    assert r.exit_code == 0, r.output
    assert out.exists() and (out.parent / "labels.json").exists() and (out.parent / "preprocess.json").exists()
    assert "parity on 64 test images" in r.output and "top-1 agreement 1.0000" in r.output
    assert "logged" not in r.output


def test_cli_export_missing_model_is_one_line_error(tmp_path):
    r = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2
    assert r.output.strip().startswith("Error:") and len(r.output.strip().splitlines()) == 1


def test_cli_export_tracked_registers_onnx_model(digits, tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")  # conftest points the env var here too
    with mlflow.start_run() as run:
        mlflow.log_param("method", "coreg")
    st = _student(digits, nets=1, source={"method": "coreg", "run_id": run.info.run_id,
                                          "registered_model_name": "digits-student"})
    st.save(tmp_path / "student.pt")
    out = tmp_path / "student.onnx"
    r = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "student.pt"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "registered as digits-student-onnx version 1" in r.output
    client = mlflow.MlflowClient()
    versions = client.search_model_versions("name='digits-student-onnx'")
    assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    logged = client.get_run(run.info.run_id)
    assert logged.data.metrics["export_parity_top1_agreement"] == 1.0
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "onnx_export")}
    assert {"onnx_export/labels.json", "onnx_export/preprocess.json"} <= arts
    loaded = mlflow.onnx.load_model(versions[0].source)
    assert {p.key for p in loaded.metadata_props} >= {"coreg.classes", "coreg.spec", "coreg.format"}


def test_cli_export_int8_reports_accuracy_change(trained, tmp_path):
    trained.save(tmp_path / "student.pt")
    out = tmp_path / "student.onnx"
    r = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "student.pt"), "--out", str(out), "--int8",
                                  "--no-track"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "student.int8.onnx").exists()
    assert "test accuracy (359 images): fp32" in r.output and "points" in r.output


def test_cli_export_refuses_to_overwrite_without_force(digits, tmp_path):
    st = _student(digits, nets=1)
    st.save(tmp_path / "student.pt")
    out = tmp_path / "out" / "a.onnx"
    args = ["export", "--model", str(tmp_path / "student.pt"), "--no-track"]
    assert CliRunner().invoke(main, [*args, "--out", str(out)]).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert {"a.onnx", "labels.json", "preprocess.json", "a.onnx.parity.json"} <= set(before)
    # the same model path, and another model in the same folder (its sidecars would replace a.onnx's)
    for target in (out, out.parent / "b.onnx"):
        r = CliRunner().invoke(main, [*args, "--out", str(target)])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error:") and "--force" in lines[0], r.output
        assert "labels.json" in lines[0] and "preprocess.json" in lines[0]
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before  # nothing touched, no temp files
    (out.parent / "labels.json").write_text('["stale"]')
    r = CliRunner().invoke(main, [*args, "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    assert json.loads((out.parent / "labels.json").read_text()) == list(digits.classes)
