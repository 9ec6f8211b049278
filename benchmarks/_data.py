"""Benchmark data helpers: small real subsets of the datasets in ``../shared/data`` (offline)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from coreg.data.datasets import _SPECS, DataBundle, ImageSplit, to_uint8_image

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def cifar10_subset(n_train_per_class: int = 200, n_test_per_class: int = 100, *,
                   tarball: Path | None = None) -> DataBundle:
    """CIFAR-10 (JPEG re-encoding) subset read straight from the tarball, first files per class."""
    tarball = tarball or SHARED / "cifar10-jpeg.tar.gz"
    if not tarball.exists():
        raise SystemExit(f"{tarball} not found: the CIFAR-10 benchmarks need ../shared/data")
    want = {"train": n_train_per_class, "test": n_test_per_class}
    got: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {"train": {}, "test": {}}
    with tarfile.open(tarball) as tf:
        for m in tf:
            if not m.isfile() or not m.name.endswith(".jpg"):
                continue
            parts = Path(m.name).parts
            split = next((p for p in parts if p in ("train", "test")), None)
            if split is None:
                continue
            cls = parts[parts.index(split) + 1]
            bucket = got[split].setdefault(cls, [])
            if len(bucket) >= want[split]:
                continue
            data = tf.extractfile(m).read()  # type: ignore[union-attr]
            img = to_uint8_image(Image.open(io.BytesIO(data)), size=32, channels=3)
            bucket.append((m.name, img))
            if all(len(got[s].get(c, [])) >= want[s] for s in want for c in CIFAR_CLASSES):
                break

    def split(name: str) -> ImageSplit:
        imgs, labels, ids = [], [], []
        for ci, c in enumerate(CIFAR_CLASSES):
            for path, im in sorted(got[name].get(c, [])):
                imgs.append(im)
                labels.append(ci)
                ids.append(path)
        return ImageSplit(images=np.stack(imgs), labels=np.array(labels, dtype=np.int64), ids=ids)

    return DataBundle(name="cifar10-subset", classes=list(CIFAR_CLASSES), train=split("train"), test=split("test"),
                      spec=_SPECS["cifar10"], split={"kind": "official-subset", "per_class": want})
