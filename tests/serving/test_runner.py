"""OnnxClassifier and ``coreg-serve predict`` on an exported student (module edges: test_imports.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from coreg.data.transforms import Augmenter, to_tensor_images
from coreg.export import export_student
from coreg.models import create_model
from coreg.student import Student
from serving.classifier import ModelLoadError, OnnxClassifier, top_k_from_logits
from serving.runner import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path(digits, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    nets = [create_model("tiny_cnn", num_classes=10, in_channels=1, setting="32x32", width=1.0, proj_dim=8).eval()
            for _ in range(2)]
    st = Student(nets=nets, classes=[f"digit {c}" for c in digits.classes], spec=digits.spec,
                 data=digits.describe(), source={"method": "coreg"})
    return export_student(st, tmp_path_factory.mktemp("m") / "student.onnx",
                          parity_images=digits.test.images[:8]).path


@pytest.fixture(scope="module")
def image_dir(digits, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    for i in range(5):
        Image.fromarray(digits.test.images[i, :, :, 0], "L").save(d / f"img{i}.png")
    (d / "readme.txt").write_text("not an image, and ignored in a folder")
    return d


def test_classifier_reads_metadata_and_matches_onnx_of_eval_transform(model_path, digits):
    clf = OnnxClassifier(model_path, threads=1)
    assert clf.classes == [f"digit {c}" for c in digits.classes]
    assert clf.spec.size == 16 and clf.spec.channels == 1 and list(clf.spec.mean) == list(digits.spec.mean)
    imgs = [Image.fromarray(digits.test.images[i, :, :, 0], "L") for i in range(7)]
    logits = clf.predict(imgs, batch_size=3)  # 3 + 3 + 1: uneven batches through the dynamic axis
    ref = clf.predict_array(Augmenter(digits.spec).test(to_tensor_images(digits.test.images[:7])).numpy())
    assert logits.shape == (7, 10)
    np.testing.assert_allclose(logits, ref, atol=1e-6)
    top = clf.top_k(imgs[:2], k=3)
    assert len(top) == 2 and len(top[0]) == 3
    assert top[0][0]["index"] == int(logits[0].argmax()) and top[0][0]["class"] == clf.classes[top[0][0]["index"]]
    assert top[0][0]["score"] >= top[0][1]["score"] >= top[0][2]["score"]


def test_top_k_scores_are_softmax():
    out = top_k_from_logits(np.array([[0.0, 1.0, 2.0]]), ["a", "b", "c"], k=10)[0]
    assert [t["class"] for t in out] == ["c", "b", "a"]
    assert abs(sum(t["score"] for t in out) - 1.0) < 1e-9


def test_sidecar_fallback_and_missing_metadata(model_path, tmp_path):
    import onnx

    m = onnx.load(str(model_path))
    del m.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(m, str(bare))
    with pytest.raises(ModelLoadError, match="coreg.classes"):
        OnnxClassifier(bare)
    for name in ("labels.json", "preprocess.json"):
        (tmp_path / name).write_text((model_path.parent / name).read_text())
    assert OnnxClassifier(bare).classes == [f"digit {i}" for i in range(10)]


def test_predict_cli_files_and_dir_json(model_path, image_dir, capsys):
    files = [str(image_dir / "img0.png"), str(image_dir / "img1.png")]
    assert main(["predict", "--model", str(model_path), *files, str(image_dir), "--top-k", "2", "--json",
                 "--batch-size", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    preds = doc["predictions"]
    assert len(preds) == 2 + 5  # the .txt file in the folder is skipped
    assert all(len(p["top_k"]) == 2 and p["top_k"][0]["class"].startswith("digit ") for p in preds)
    assert preds[0]["top_k"] == preds[2]["top_k"]  # img0 given directly and through the folder


def test_predict_cli_text_output(model_path, image_dir, capsys):
    assert main(["predict", "--model", str(model_path), str(image_dir / "img3.png")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(image_dir / "img3.png") + "\t") and "digit " in line


def test_predict_cli_corrupt_file_exit_2_one_line(model_path, image_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    r = subprocess.run([sys.executable, "-m", "serving.runner", "predict", "--model", str(model_path),
                        str(image_dir / "img0.png"), str(bad)], cwd=REPO, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.jpg" in lines[0]


def test_predict_cli_missing_model(tmp_path, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.onnx"), str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_edge_install_without_torch(model_path, image_dir, tmp_path):
    """A clean venv with only serving/requirements.txt runs ``coreg-serve predict`` (needs pip access)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(REPO / "serving" / "requirements.txt")],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"pip could not install serving/requirements.txt: {r.stderr.strip().splitlines()[-1:]}")
    r = subprocess.run([str(py), "-c", "import torch"], capture_output=True, timeout=60)
    assert r.returncode != 0  # torch is really absent
    r = subprocess.run([str(py), "-m", "serving.runner", "predict", "--model", str(model_path), str(image_dir),
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["predictions"]) == 5
