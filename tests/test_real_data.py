"""Real-data integration (marked slow): a CIFAR-10 subset from ../shared/data as a ``folder:``
dataset, annotated with the tiny open_clip model, accepted by ``coreg train``; Fashion-MNIST idx files."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreg.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.slow


def _cifar_folder(root: Path, per_class: int = 20) -> Path:
    tarball = SHARED / "cifar10-jpeg.tar.gz"
    if not tarball.exists():
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz not available")
    counts: dict[tuple[str, str], int] = {}
    with tarfile.open(tarball) as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = Path(m.name).parts
            split = next((p for p in parts if p in ("train", "test")), None)
            if split is None:
                continue
            cls = parts[parts.index(split) + 1]
            n = counts.get((split, cls), 0)
            if n >= (per_class if split == "train" else per_class // 2):
                continue
            counts[(split, cls)] = n + 1
            dest = root / split / cls / Path(m.name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(io.BytesIO(tf.extractfile(m).read()).getvalue())  # type: ignore[union-attr]
            if len(counts) == 20 and all(v >= (per_class if s == "train" else per_class // 2)
                                         for (s, _), v in counts.items()):
                break
    return root


def test_cifar10_folder_annotate_then_train(tmp_path) -> None:
    data = f"folder:{_cifar_folder(tmp_path / 'cifar')}"
    runner = CliRunner()
    ann = tmp_path / "ann.npz"
    r = runner.invoke(main, ["annotate", "--data", data, "--model", "coreg-tiny", "--pretrained", "none",
                             "--out", str(ann), "--no-track", "--cache-dir", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["report", str(ann), "--data", data, "--json"])
    assert r.exit_code == 0 and '"eta"' in r.output
    r = runner.invoke(main, ["train", "--data", data, "--annotations", str(ann), "--epochs", "2", "--warmup", "1",
                             "--set", "model.name=tiny_cnn", "--set", "method.batch_size=32",
                             "--set", "method.moco_queue=64", "--out", str(tmp_path / "run"), "--no-track",
                             "--no-progress"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "student.pt").exists()


def test_fashion_mnist_idx_files() -> None:
    if not (SHARED / "fashion-mnist").exists():
        pytest.skip("../shared/data/fashion-mnist not available")
    from coreg.data import load_dataset

    b = load_dataset("fmnist", data_dir=SHARED / "fashion-mnist")
    assert len(b.train) == 60_000 and len(b.test) == 10_000
    assert b.train.images.shape[1:] == (28, 28, 1) and b.classes[0] == "T-shirt/top"
