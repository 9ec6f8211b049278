"""Record Co-Reg's reference behaviour on a short CPU run (the golden file of test_coreg_faithful).

Float results differ in their last bits between CPUs (vector kernels: AVX2 vs AVX-512), so the file
holds one record per platform (:func:`platform_key`). Each is recorded by running *the reference
code*, commit beb1ffe (before presets existed) with the one-line fix of index_batches (its merge of
a 1-sample last batch overwrote batch [-3]), with no preset; this script appends or replaces the
record of the machine it runs on:

    git worktree add /tmp/ref beb1ffe   # then apply the index_batches fix (commit 1260301) there
    cd /tmp/ref && PYTHONPATH=/tmp/ref python /path/to/make_coreg_faithful_golden.py \
        /path/to/tests/methods/data/coreg_faithful_golden.json
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from coreg.data import load_dataset
from coreg.engine import TrainConfig, fit
from coreg.simulate import simulate_annotation

OVERRIDES = ["model.name=tiny_cnn", "method.batch_size=32", "method.moco_queue=100", "method.start_cont=0",
             "amp=off", "channels_last=false", "epochs=4", "warmup=1", "val_fraction=0.1"]
KEYS = ["net1_loss", "net2_loss", "net1_num_labelled", "net2_num_labelled", "test_acc", "test_acc_net1",
        "test_acc_net2", "val_approx_acc", "lr"]


def platform_key() -> str:
    """What decides the last bits of a CPU run: architecture, torch's CPU kernels, torch version."""
    return f"{platform.machine()}-{torch.backends.cpu.get_cpu_capability()}-torch{torch.__version__}"


def run_short(extra: list[str]) -> tuple[str, list[dict[str, float]]]:
    """A 4-epoch Co-Reg run on 240 digits (flip q=0.2, eta=0.2): (weights sha256, per-epoch metrics)."""
    b = load_dataset("digits")
    b.train.images, b.train.labels, b.train.ids = b.train.images[:240], b.train.labels[:240], b.train.ids[:240]
    b.test.images, b.test.labels, b.test.ids = b.test.images[:100], b.test.labels[:100], b.test.ids[:100]
    ann = simulate_annotation(b, kind="flip", q=0.2, eta=0.2, seed=0)
    cfg = TrainConfig.for_method("coreg").with_overrides(extra + OVERRIDES)
    with tempfile.TemporaryDirectory() as d:
        r = fit(cfg, b, ann, out_dir=d, progress=False)
    h = hashlib.sha256()
    for net in r.student.nets:
        for k, v in net.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest(), [{k: e[k] for k in KEYS if k in e} for e in r.history]


if __name__ == "__main__":
    torch.set_num_threads(1)
    digest, hist = run_short(sys.argv[2:])
    path = Path(sys.argv[1])
    golden = json.loads(path.read_text()) if path.exists() else {"overrides": OVERRIDES, "threads": 1, "records": []}
    key = platform_key()
    golden["records"] = [r for r in golden["records"] if r["platform"] != key]
    golden["records"].append({"platform": key, "sha256": digest, "history": hist})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(golden, indent=1))
    tmp.replace(path)
