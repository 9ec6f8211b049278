"""The bad-input catalogue: each bad input to the CLI, the JSONL import and training is exit code 2
and one ``Error: ...`` line naming the problem; no traceback and no partial output is left.

Plus a kill -9 in the middle of training: ``--resume`` then ends bit for bit where an uninterrupted
run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from coreg.cli import main

TINY = ["--epochs", "1", "--warmup", "1", "--set", "model.name=tiny_cnn", "--set", "method.batch_size=8",
        "--set", "method.moco_queue=16", "--no-progress"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, make_image_folder: Callable[..., str]) -> dict[str, Any]:
    """Read-only inputs of the cases: a folder dataset, its annotation, a digits annotation, a trained run."""
    root = tmp_path_factory.mktemp("shared")
    folder = make_image_folder(root / "images")
    runner = CliRunner()
    for data, name in ((folder, "folder.npz"), ("digits", "digits.npz")):
        r = runner.invoke(main, ["simulate", "--kind", "flip", "--data", data, "--out", str(root / name)])
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["train", "--data", folder, "--annotations", str(root / "folder.npz"), *TINY,
                             "--no-track", "--out", str(root / "run")])
    assert r.exit_code == 0, r.output
    return {"make_folder": make_image_folder, "root": root, "folder": folder, "folder_ann": str(root / "folder.npz"),
            "digits_ann": str(root / "digits.npz"), "run": str(root / "run")}


# --------------------------------------------------------------------------- inputs made per case


def _folder_with(tmp: Path, sh: dict[str, Any], rel: str, content: bytes | None = None) -> str:
    """A fresh folder dataset with one file replaced (or added) at ``rel``; returns ``folder:PATH``."""
    data = sh["make_folder"](tmp / "bad")
    path = tmp / "bad" / rel
    if content is None:  # a valid PNG, cut in half
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    return data


def _jsonl(tmp: Path, shared: dict[str, Any], edit: Callable[[list[dict[str, Any]]], list[Any]]) -> str:
    """The folder dataset's annotation as JSONL, changed by ``edit``."""
    from coreg.data import load_dataset

    ids = load_dataset(shared["folder"]).train.ids
    rows: list[Any] = [{"image": i, "candidates": ["ant", "bee"]} for i in ids]
    path = tmp / "labels.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in edit(rows)) + "\n")
    return str(path)


def _bomb_folder(tmp: Path, sh: dict[str, Any]) -> str:
    """A folder dataset with a tiny PNG whose header claims 20000 x 20000 pixels."""
    data = sh["make_folder"](tmp / "bad")
    sh["png_claiming_size"](tmp / "bad" / "train" / "ant" / "0.png", 20000, 20000)
    return data


def _other_classes(tmp: Path, sh: dict[str, Any]) -> str:
    return sh["make_folder"](tmp / "other", classes=("ant", "bee", "dog"))


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# --------------------------------------------------------------------------- the table
# (id, argv builder (tmp, shared) -> args, words the one error line must contain)

Argv = Callable[[Path, dict[str, Any]], list[str]]


def _simulate(data: Callable[[Path, dict[str, Any]], str]) -> Argv:
    return lambda tmp, sh: ["simulate", "--kind", "flip", "--data", data(tmp, sh), "--out", str(tmp / "out.npz")]


def _import(jsonl: Callable[[Path, dict[str, Any]], str], data: Callable[[Path, dict[str, Any]], str] | None = None
            ) -> Argv:
    return lambda tmp, sh: ["import", "--data", data(tmp, sh) if data else sh["folder"], "--jsonl", jsonl(tmp, sh),
                            "--no-track", "--out", str(tmp / "out.npz")]


def _train(*extra: str, data: str = "folder", ann: str = "folder_ann", tiny: bool = True, out: bool = True,
           track: bool = False) -> Argv:
    def argv(tmp: Path, sh: dict[str, Any]) -> list[str]:
        words = [w.format(**{k: v for k, v in sh.items() if isinstance(v, str)}) for w in extra]
        return ["train", "--data", sh[data], "--annotations", sh[ann], *(TINY if tiny else []),
                *([] if track else ["--no-track"]), *(["--out", str(tmp / "out")] if out else []), *words]

    return argv


CASES: list[tuple[str, Argv, tuple[str, ...]]] = [
    # datasets, through the CLI
    ("unknown-dataset", _simulate(lambda t, s: "nope"), ("unknown dataset 'nope'", "digits")),
    ("missing-folder", _simulate(lambda t, s: f"folder:{t / 'nowhere'}"), ("nowhere", "does not exist")),
    ("corrupt-image", _simulate(lambda t, s: _folder_with(t, s, "train/bee/1.png", os.urandom(200))),
     ("cannot read image", "1.png")),
    ("text-file-named-png", _simulate(lambda t, s: _folder_with(t, s, "train/ant/2.png", b"hello, not a picture\n")),
     ("cannot read image", "2.png")),
    ("truncated-png", _simulate(lambda t, s: _folder_with(t, s, "test/cat/0.png")), ("cannot read image", "0.png")),
    ("oversized-image", _simulate(_bomb_folder),
     ("0.png", "too large")),
    ("not-an-image-extension", _simulate(lambda t, s: _folder_with(t, s, "train/cat/notes.txt", b"x")),
     ("cannot read image", "notes.txt")),
    # JSONL import
    ("import-path-traversal-id", _import(lambda t, s: _jsonl(t, s, lambda r: [{**r[0], "image": "../../etc/passwd"},
                                                                           *r[1:]])),
     ("labels.jsonl:1", "unknown image '../../etc/passwd'")),
    ("import-unknown-class", _import(lambda t, s: _jsonl(t, s, lambda r: [*r[:3], {**r[3], "candidates": ["dog"]},
                                                                        *r[4:]])),
     ("labels.jsonl:4", "unknown class 'dog'")),
    ("import-jsonl-for-other-data", _import(lambda t, s: _jsonl(t, s, lambda r: r), data=lambda t, s: "digits"),
     ("labels.jsonl:1", "unknown image", "train/ant/0.png")),
    ("import-not-json", _import(lambda t, s: _jsonl(t, s, lambda r: [*r[:1], "{'image': 1}", *r[1:]])),
     ("labels.jsonl:2", "not valid JSON")),
    ("import-missing-images", _import(lambda t, s: _jsonl(t, s, lambda r: r[:5])), ("have no line",)),
    ("import-negative-score", _import(lambda t, s: _jsonl(t, s, lambda r: [{**r[0], "scores": {"ant": -1}},
                                                                         *r[1:]])),
     ("labels.jsonl:1", "must be a finite number >= 0")),
    ("import-corrupt-dataset-image", _import(lambda t, s: _jsonl(t, s, lambda r: r),
                                             data=lambda t, s: _folder_with(t, s, "train/ant/3.png", b"\x89PNG junk")),
     ("cannot read image", "3.png")),
    # training settings
    ("unknown-set-key", _train("--set", "method.bogus=1"), ("unknown config key 'method.bogus'",)),
    ("wrong-set-type", _train("--set", "lr=fast"), ("lr must be a number", "'fast'")),
    ("set-without-value", _train("--set", "lr"), ("--set expects key=value",)),
    ("warmup-over-epochs", _train("--epochs", "2", "--warmup", "5", tiny=False), ("warmup must be in [0, epochs=2]",)),
    ("negative-epochs", _train("--epochs", "-1", tiny=False), ("epochs must be >= 1",)),
    ("bad-device-setting", _train("--set", "device=tpu"), ("device must be one of", "'tpu'")),
    ("bad-config-yaml", _train("--config", "{bad_yaml}"), ("bad.yaml is not valid YAML",)),
    # the annotation and the data must belong together
    ("annotation-missing", _train(ann="missing"), ("does not exist",)),
    ("annotation-for-other-data", _train(ann="digits_ann"), ("annotation classes", "differ from dataset")),
    ("wrong-class-list", _train(data="other_folder"), ("annotation classes", "'cat'", "'dog'")),
    ("annotation-for-another-split", _train("--split-seed", "3", data="digits", ann="digits_ann"),
     ("other data", "fingerprint")),
    ("gold-unknown-image", _train("--gold", "{gold_image}"), ("gold_image.csv:2", "unknown training image 'train/ant/99.png'")),
    ("gold-unknown-class", _train("--gold", "{gold_class}"), ("gold_class.csv:1", "unknown class 'dog'")),
    # resuming
    ("resume-without-checkpoint", _train("--resume", "--out", "{tmp}"), ("nothing to resume", "no checkpoint.pt")),
    ("resume-with-changed-hyper-parameters", _train("--resume", "--out", "{run}", "--set", "lr=0.05", tiny=False),
     ("changed hyper-parameters", "lr (0.1 -> 0.05)")),
    ("resume-longer-with-a-run-length-schedule", _train("--resume", "--out", "{run}", "--epochs", "2", tiny=False),
     ("epochs (1 -> 2)", "not an extension", "lr_period=0")),
    ("resume-shorter", _train("--resume", "--out", "{run}", "--epochs", "0", tiny=False), ("epochs must be >= 1",)),
    ("soft-labels-without-scores", _train("--set", "method.soft_labels=true"), ("needs an annotation with scores",)),
    ("soft-labels-without-scores-default-folder", _train("--set", "method.soft_labels=true", out=False),
     ("needs an annotation with scores",)),
    ("soft-labels-without-scores-tracked", _train("--set", "method.soft_labels=true", out=False, track=True),
     ("needs an annotation with scores",)),
    # other stages
    ("export-no-student", lambda t, s: ["export", "--model", str(t / "none.pt"), "--out", str(t / "out.onnx")],
     ("no student at",)),
    ("register-without-study-or-metric", lambda t, s: ["register", "--name", "m"], ("give --study S",)),
]


def _outputs(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.name.startswith("out"))


@pytest.mark.parametrize("argv", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line(argv: Argv, request: pytest.FixtureRequest, tmp_path: Path,
                                     shared: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                     png_claiming_size: Callable[[Path, int, int], None]) -> None:
    words = dict(zip([c[0] for c in CASES], [c[2] for c in CASES]))[request.node.callspec.id]
    monkeypatch.chdir(tmp_path)  # default output folders (outputs/...) land here
    sh = dict(shared, png_claiming_size=png_claiming_size, other_folder=_other_classes(tmp_path, shared), tmp=str(tmp_path), missing=str(tmp_path / "none.npz"),
              gold_image=_write(tmp_path / "gold_image.csv", "image,class\ntrain/ant/99.png,ant\n"),
              gold_class=_write(tmp_path / "gold_class.csv", "train/ant/0.png,dog\n"),
              bad_yaml=_write(tmp_path / "bad.yaml", "lr: [0.1\n"), digits="digits")
    run_before = sorted(p.name for p in Path(shared["run"]).iterdir())
    ckpt_before = (Path(shared["run"]) / "checkpoint.pt").read_bytes()
    r = CliRunner().invoke(main, argv(tmp_path, sh))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2, r.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception, SystemExit)
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert _outputs(tmp_path) == [], "partial output left behind"
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").rglob("*.pt"))
    assert sorted(p.name for p in Path(shared["run"]).iterdir()) == run_before
    assert (Path(shared["run"]) / "checkpoint.pt").read_bytes() == ckpt_before


def test_the_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


# --------------------------------------------------------------------------- kill -9, then --resume

KILL_ARGS = ["--epochs", "8", "--warmup", "2", "--set", "model.name=tiny_cnn", "--set", "method.batch_size=64",
             "--set", "method.moco_queue=512", "--no-track", "--no-progress"]


def _train_process(ann: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen([sys.executable, "-m", "coreg.cli", "train", "--data", "digits", "--annotations", str(ann),
                             *KILL_ARGS, "--out", str(out), *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _epochs_done(out: Path) -> int:
    from coreg.engine.checkpoint import load_checkpoint

    try:
        return int(load_checkpoint(out / "checkpoint.pt")["epoch"]) + 1
    except Exception:  # noqa: BLE001 - not written yet
        return 0


@pytest.fixture
def one_thread() -> Any:
    """The in-process runs use one thread, as the subprocess does (same float summation order)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path: Path, shared: dict[str, Any],
                                                        one_thread: None) -> None:
    """kill -9 after 3 of 8 epochs, then --resume: the student and every epoch's metrics equal those of a
    run that was never interrupted (the reference and the resume run in this process, one thread)."""
    from coreg.engine.checkpoint import load_checkpoint
    from coreg.student import Student

    ann = Path(shared["digits_ann"])
    killed = _train_process(ann, tmp_path / "killed")
    deadline = time.monotonic() + 120
    while _epochs_done(tmp_path / "killed") < 3 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done = _epochs_done(tmp_path / "killed")
    assert killed.returncode == -signal.SIGKILL and 3 <= done < 8
    assert not (tmp_path / "killed" / "student.pt").exists()

    args = ["train", "--data", "digits", "--annotations", str(ann), *KILL_ARGS]
    full = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output
    resumed = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "killed"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"after epoch {done} of 8" in resumed.output

    a = Student.load_file(tmp_path / "full" / "student.pt")
    b = Student.load_file(tmp_path / "killed" / "student.pt")
    for net_a, net_b in zip(a.nets, b.nets, strict=True):
        for (key, va), (_, vb) in zip(net_a.state_dict().items(), net_b.state_dict().items(), strict=True):
            assert torch.equal(va, vb), key
    hist_a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["history"]
    hist_b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["history"]
    assert len(hist_a) == len(hist_b) == 8
    for ha, hb in zip(hist_a, hist_b, strict=True):
        assert {k: v for k, v in ha.items() if not k.endswith("_time")} == \
            {k: v for k, v in hb.items() if not k.endswith("_time")}
