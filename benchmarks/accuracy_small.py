"""Co-Reg vs the warm-up-only network (partial CE + negative entropy for the same budget) at a
reduced budget: digits with the instance-dependent annotator, and a CIFAR-10 subset with the
paper's synthetic labels (q=0.1, eta=0.2).

    python -m benchmarks.accuracy_small [--digits-epochs 40 --digits-warmup 15]
        [--cifar-images 3000 --cifar-epochs 24 --cifar-warmup 12] [--skip-cifar] [--out benchmarks/results/accuracy_small.json]

Prints a markdown table and writes JSON. All rows share the network (PreAct ResNet-18 at
width 0.25), the seed, the epoch budget and the batch size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from benchmarks._data import cifar10_subset
from coreg.data import annotation_stats, load_dataset
from coreg.data.annotations import Annotation
from coreg.data.candidates import flip_candidates
from coreg.engine import TrainConfig, fit
from coreg.simulate import simulate_annotation
from coreg.tracking import NullTracker

VARIANTS = {
    "coreg": ("coreg", []),
    "coreg (lambda_u=25)": ("coreg", ["method.lambda_u=25"]),
    "warmup_only": ("warmup_only", []),
}


def run(name: str, bundle: Any, ann: Annotation, *, epochs: int, warmup: int, sets: list[str], out: Path) -> dict:
    method, extra = VARIANTS[name]
    if method == "warmup_only":  # Co-Reg's warm-up batch is twice its co-training batch
        sets = [f"method.batch_size={2 * int(s.split('=')[1])}" if s.startswith("method.batch_size=") else s
                for s in sets]
    cfg = TrainConfig.for_method(method).with_overrides(sets + extra + [f"epochs={epochs}", f"warmup={warmup}"])
    t = time.perf_counter()
    r = fit(cfg, bundle, ann, out_dir=out / f"{bundle.name}-{method}-{int(t)}", tracker=NullTracker(), progress=False)
    wall = time.perf_counter() - t
    return {"method": name, "test_acc": r.metrics["test_acc"], "best_test_acc": r.metrics["best_test_acc"],
            "val_approx_acc": r.metrics.get("val_approx_acc"), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits-epochs", type=int, default=40)
    ap.add_argument("--digits-warmup", type=int, default=15)
    ap.add_argument("--cifar-images", type=int, default=3000)
    ap.add_argument("--cifar-epochs", type=int, default=24)
    ap.add_argument("--cifar-warmup", type=int, default=12)
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--out", default="benchmarks/results/accuracy_small.json")
    ap.add_argument("--work", default="/tmp/coreg-accuracy-small")
    args = ap.parse_args()
    work = Path(args.work)
    rows = []
    settings = []
    digits = load_dataset("digits")
    ann = simulate_annotation(digits, kind="instance", seed=0)
    settings.append(("digits, instance annotator", digits, ann, args.digits_epochs, args.digits_warmup,
                     [f"model.width={args.width}", "method.batch_size=64"]))
    if not args.skip_cifar:
        cifar = cifar10_subset(args.cifar_images // 10, 100)
        cand = flip_candidates(cifar.train.labels, 10, q=0.1, eta=0.2, seed=0)
        cann = Annotation(candidates=cand, classes=cifar.classes, annotator={"kind": "flip", "q": 0.1, "eta": 0.2},
                          data=cifar.describe())
        settings.append((f"CIFAR-10 {len(cifar.train)} images, flip q=0.1 eta=0.2", cifar, cann, args.cifar_epochs,
                         args.cifar_warmup, [f"model.width={args.width}", "method.batch_size=128"]))
    for name, bundle, a, epochs, warmup, sets in settings:
        st = annotation_stats(a, bundle.train.labels)
        for method in VARIANTS:
            r = run(method, bundle, a, epochs=epochs, warmup=warmup, sets=sets, out=work)
            r.update({"setting": name, "epochs": epochs, "warmup": warmup, "annotator_train_acc": st["single_label_acc"],
                      "avg_set_size": st["avg_set_size"], "eta": st["eta"]})
            rows.append(r)
            print(f"{name} {method}: test {r['test_acc']:.4f} (best {r['best_test_acc']:.4f}) {r['wall_s']:.0f}s",
                  flush=True)
    lines = ["| setting | epochs (W) | annotator acc | avg set / eta | method | test acc (last) | best | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['epochs']} ({r['warmup']}) | {r['annotator_train_acc']:.3f} | "
                     f"{r['avg_set_size']:.2f} / {r['eta']:.3f} | {r['method']} | {r['test_acc']:.4f} | "
                     f"{r['best_test_acc']:.4f} | {r['wall_s']:.0f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "table": table}, indent=2))
    out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
