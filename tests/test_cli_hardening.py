"""Bad inputs that used to run code, crash with a traceback or train silently: through the CLI,
each is exit code 2 and one ``Error:`` line naming the problem (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from coreg.cli import main


def one_line_error(r: Result, *needles: str) -> str:
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def flip_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ann") / "a.npz"
    r = CliRunner().invoke(main, ["simulate", "--kind", "flip", "--data", "digits", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _train_args(ann: Path, out: Path) -> list[str]:
    return ["train", "--data", "digits", "--annotations", str(ann), "--epochs", "1", "--warmup", "1",
            "--set", "model.name=tiny_cnn", "--out", str(out), "--no-track", "--no-progress"]


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_resume_and_export_refuse_a_malicious_pickle(tmp_path: Path, flip_npz: Path) -> None:
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"epoch": 0, "method": {}, "extra": _Touch(marker)}, run / "checkpoint.pt")
    r = CliRunner().invoke(main, [*_train_args(flip_npz, run), "--resume"])
    one_line_error(r, "refusing to load checkpoint", "checkpoint.pt")
    torch.save({"format": "coreg-student-v1", "nets": [_Touch(marker)]}, tmp_path / "student.pt")
    r = CliRunner().invoke(main, ["export", "--model", str(tmp_path / "student.pt"), "--out",
                                  str(tmp_path / "m" / "s.onnx"), "--no-track"])
    one_line_error(r, "refusing to load student file")
    assert not marker.exists()
    assert not (tmp_path / "m").exists()


def test_non_finite_config_value(tmp_path: Path, flip_npz: Path) -> None:
    r = CliRunner().invoke(main, [*_train_args(flip_npz, tmp_path / "run"), "--set", "lr=1e999"])
    one_line_error(r, "lr must be a finite number, got inf")
    assert not (tmp_path / "run").exists()


def test_bad_annotation_files(tmp_path: Path, flip_npz: Path) -> None:
    with np.load(flip_npz) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["meta"]))
    probs = np.where(arrays["candidates"], 0.8, 0.05).astype(np.float32)
    np.savez(tmp_path / "probs.npz", candidates=probs, meta=arrays["meta"])
    one_line_error(CliRunner().invoke(main, _train_args(tmp_path / "probs.npz", tmp_path / "r1")),
                   "values other than 0 and 1", "scores")
    scores = probs / probs.sum(1, keepdims=True)
    scores[7, 2] = np.nan
    np.savez(tmp_path / "nan.npz", candidates=arrays["candidates"], scores=scores, meta=arrays["meta"])
    one_line_error(CliRunner().invoke(main, _train_args(tmp_path / "nan.npz", tmp_path / "r2")),
                   "scores hold NaN or inf", "row 7")
    meta.pop("data")
    np.savez(tmp_path / "bare.npz", candidates=arrays["candidates"], meta=np.array(json.dumps(meta)))
    one_line_error(CliRunner().invoke(main, _train_args(tmp_path / "bare.npz", tmp_path / "r3")),
                   "no dataset fingerprint")
    assert not any((tmp_path / f"r{i}").exists() for i in (1, 2, 3))


@pytest.mark.parametrize("content", ["empty", "truncated"])
def test_empty_or_truncated_npz_in_a_subprocess(tmp_path: Path, flip_npz: Path, content: str) -> None:
    data = flip_npz.read_bytes()
    bad = tmp_path / f"{content}.npz"
    bad.write_bytes(b"" if content == "empty" else data[: len(data) // 2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "coreg.cli", "report", str(bad), "--data", "digits"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and bad.name in lines[0], r.stderr
    assert "Aborted" not in r.stderr and "Traceback" not in r.stderr


def _folder(root: Path, classes: list[str], n: int = 3) -> None:
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / c / f"{i}.png")


def test_bad_folder_datasets(tmp_path: Path, png_claiming_size) -> None:  # noqa: ANN001
    args = ["simulate", "--kind", "flip", "--out", str(tmp_path / "a.npz")]
    _folder(tmp_path / "bomb", ["a", "b"])
    png_claiming_size(tmp_path / "bomb" / "b" / "huge.png", 20000, 20000)
    one_line_error(CliRunner().invoke(main, [*args, "--data", f"folder:{tmp_path / 'bomb'}"]),
                   "huge.png", "64,000,000 pixels")
    _folder(tmp_path / "empty", ["a", "b"])
    (tmp_path / "empty" / "c").mkdir()
    one_line_error(CliRunner().invoke(main, [*args, "--data", f"folder:{tmp_path / 'empty'}"]),
                   "class folder", "holds no images")
    _folder(tmp_path / "single", ["only"])
    one_line_error(CliRunner().invoke(main, [*args, "--data", f"folder:{tmp_path / 'single'}"]),
                   "at least 2 classes")
    assert not (tmp_path / "a.npz").exists()
