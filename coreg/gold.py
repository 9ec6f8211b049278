"""Few-shot gold labels: a user file (image id, class) or k per class drawn for benchmarks.

Gold labels are returned as an int64 array ``[N]`` over the training split, ``-1`` where unknown.
In training they become trusted one-hot candidate sets (always in P with weight 1 in Co-Reg);
those that fall into the selection hold-out give the ``val_acc`` selection metric instead.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from coreg.data.datasets import DataBundle
from coreg.errors import CoregError


def load_gold_file(path: str | Path, bundle: DataBundle) -> np.ndarray:
    """Read ``id,class`` rows (CSV with an optional header, or JSON lines ``{"image":..., "class":...}``).

    ``id`` is the image id of the training split (relative path for folder data, the index
    otherwise); ``class`` a class name or index.

    Raises:
        CoregError: unreadable file, unknown image or class, an image listed twice (with line number).
    """
    path = Path(path)
    if not path.exists():
        raise CoregError(f"gold file {path} does not exist")
    ids = {s: i for i, s in enumerate(bundle.train.ids)}
    names = {c: i for i, c in enumerate(bundle.classes)}
    gold = np.full(len(bundle.train), -1, dtype=np.int64)
    text = path.read_text().splitlines()
    for ln, line in enumerate(text, 1):
        if not line.strip():
            continue
        if path.suffix in (".jsonl", ".json"):
            try:
                obj = json.loads(line)
                img, cls = str(obj["image"]), obj["class"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CoregError(f"{path}:{ln}: expected {{\"image\": ..., \"class\": ...}} ({e})") from None
        else:
            row = next(csv.reader([line]))
            if len(row) != 2:
                raise CoregError(f"{path}:{ln}: expected 'image,class', got {line!r}")
            img, cls = row[0].strip(), row[1].strip()
            if ln == 1 and img.lower() in ("image", "id", "path") and cls.lower() in ("class", "label"):
                continue
        if img not in ids:
            raise CoregError(f"{path}:{ln}: unknown training image {img!r}")
        if isinstance(cls, int) or (isinstance(cls, str) and cls.isdigit() and cls not in names):
            k = int(cls)
            if not 0 <= k < len(bundle.classes):
                raise CoregError(f"{path}:{ln}: class index {k} out of range")
        elif cls in names:
            k = names[cls]
        else:
            raise CoregError(f"{path}:{ln}: unknown class {cls!r}")
        i = ids[img]
        if gold[i] >= 0:
            raise CoregError(f"{path}:{ln}: image {img!r} listed twice")
        gold[i] = k
    return gold


def sample_shots(bundle: DataBundle, shots: int, *, seed: int) -> np.ndarray:
    """Benchmarks: reveal ``shots`` gold labels per class (seeded).

    Raises:
        CoregError: the dataset has no gold labels or ``shots`` is negative.
    """
    y = bundle.train.labels
    if y is None:
        raise CoregError(f"--shots needs gold labels, and dataset {bundle.name} has none")
    if shots < 0:
        raise CoregError(f"--shots must be >= 0, got {shots}")
    rng = np.random.default_rng(seed)
    gold = np.full(len(y), -1, dtype=np.int64)
    for c in range(len(bundle.classes)):
        idx = np.flatnonzero(y == c)
        pick = rng.choice(idx, min(shots, len(idx)), replace=False)
        gold[pick] = c
    return gold
