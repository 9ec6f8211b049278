"""Compare every method on one engine, budget, seed and network (issue 5).

Example::

    python benchmarks/compare.py --data digits --methods all --epochs 6 --warmup 2 --set model.width=0.25

Each method runs through :func:`coreg.engine.fit` with a ``NullTracker`` (checkpoints go to a
temporary folder). The table reports the last and best test accuracy, wall time and training
throughput (training images x epochs / summed epoch time). ``zero_shot`` trains nothing: its test
accuracy is the annotator's (``test_scores`` of the annotation) when available, else ``n/a`` with
the annotator's accuracy on the training split in the notes. ``--set`` overrides apply to every
method; ``method.*`` keys a method's config lacks are skipped for that method (and noted).
Without ``--annotations`` the candidate sets are simulated (``--simulate flip``: q=0.1, eta=0.2;
``instance`` also gives soft scores, which ``kd`` needs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from coreg.config import parse_overrides
from coreg.data import load_annotation_for, load_dataset
from coreg.engine import TrainConfig, fit
from coreg.errors import CoregError
from coreg.methods import list_methods
from coreg.methods.baselines import zero_shot_accuracy
from coreg.simulate import simulate_annotation
from coreg.tracking import NullTracker

DEFAULTS = ["model.width=0.25"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset name (e.g. digits)")
    p.add_argument("--annotations", default=None, help="annotation .npz (default: simulated)")
    p.add_argument("--simulate", default="flip", choices=["flip", "instance"], help="simulation kind without --annotations")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs (default: epochs // 2)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every method (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", default="benchmarks/results/compare")
    return p.parse_args(argv)


def method_config(name: str, *, epochs: int, warmup: int, seed: int, device: str,
                  sets: list[str]) -> tuple[TrainConfig, list[str]]:
    """The config of one method and the overrides skipped because its config lacks them."""
    cfg = TrainConfig.for_method(name)
    fields = {f.name for f in dataclasses.fields(cfg.method)}
    keep, skipped = [], []
    for item in DEFAULTS + list(sets):
        key = next(iter(parse_overrides([item])))
        if key.startswith("method.") and key.split(".", 1)[1] not in fields:
            skipped.append(item)
        else:
            keep.append(item)
    keep += [f"epochs={epochs}", f"warmup={warmup}", f"seed={seed}", f"device={device}"]
    return cfg.with_overrides(keep), skipped


def run_method(name: str, cfg: TrainConfig, bundle: Any, ann: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"method": name}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"compare-{name}-") as tmp:
        res = fit(cfg, bundle, ann, out_dir=tmp, tracker=NullTracker(), progress=False)
    row["wall_s"] = time.perf_counter() - t0
    train_time = sum(h.get("epoch_time", 0.0) for h in res.history)
    n_train = int(res.extras.get("num_train", 0))
    row["test_acc_last"] = res.metrics.get("test_acc")
    row["test_acc_best"] = res.metrics.get("best_test_acc")
    row["images_per_s"] = n_train * len(res.history) / train_time if train_time > 0 and name != "zero_shot" else None
    row["val_approx_acc_last"] = res.metrics.get("val_approx_acc")
    if name == "zero_shot":
        zs = zero_shot_accuracy(ann, bundle)
        row["test_acc_last"] = row["test_acc_best"] = zs.get("test_acc")
        row["notes"] = ("annotator test accuracy" if "test_acc" in zs else
                        f"no test_scores; annotator train acc {zs.get('annotator_train_acc', float('nan')):.4f}, "
                        f"coverage {zs.get('annotator_train_coverage', float('nan')):.4f}")
    return row


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(rows: list[dict[str, Any]], header: dict[str, Any]) -> str:
    lines = [f"# Method comparison: {header['data']} ({header['annotation']})", "",
             f"Command: `{header['command']}`", "",
             f"epochs {header['epochs']}, warm-up {header['warmup']}, seed {header['seed']}, "
             f"device {header['device']}, overrides {header['sets']}", "",
             "| method | test acc (last) | test acc (best) | wall s | images/s | notes |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {_fmt(r.get('test_acc_last'), '.4f')} | {_fmt(r.get('test_acc_best'), '.4f')} "
                     f"| {_fmt(r.get('wall_s'), '.1f')} | {_fmt(r.get('images_per_s'), '.0f')} | {r.get('notes', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup = args.warmup if args.warmup is not None else args.epochs // 2
    names = list_methods() if args.methods == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(list_methods()))
    if unknown:
        print(f"unknown methods {unknown}; valid: {list_methods()}", file=sys.stderr)
        return 2
    bundle = load_dataset(args.data)
    if args.annotations:
        ann = load_annotation_for(args.annotations, bundle)
        ann_desc = str(args.annotations)
    else:
        ann = simulate_annotation(bundle, kind=args.simulate, q=0.1, eta=0.2, seed=0)
        ann_desc = f"simulated {args.simulate}" + (" q=0.1 eta=0.2" if args.simulate == "flip" else "")
    rows: list[dict[str, Any]] = []
    for name in names:
        try:
            cfg, skipped = method_config(name, epochs=args.epochs, warmup=warmup, seed=args.seed, device=args.device,
                                         sets=args.sets)
            row = run_method(name, cfg, bundle, ann)
            if skipped:
                row["notes"] = (row.get("notes", "") + f" skipped {skipped}").strip()
        except (ValueError, CoregError) as e:
            row = {"method": name, "notes": f"not run: {e}"}
        rows.append(row)
        print(f"{name:12s} last {_fmt(row.get('test_acc_last'), '.4f')} best {_fmt(row.get('test_acc_best'), '.4f')} "
              f"{_fmt(row.get('wall_s'), '.1f')} s {row.get('notes', '')}", flush=True)
    header = {"data": args.data, "annotation": ann_desc, "epochs": args.epochs, "warmup": warmup, "seed": args.seed,
              "device": args.device, "sets": DEFAULTS + list(args.sets),
              "command": "python " + " ".join([sys.argv[0]] + (argv if argv is not None else sys.argv[1:]))}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps({"header": header, "rows": rows}, indent=2))
    md = markdown(rows, header)
    (out / "compare.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
