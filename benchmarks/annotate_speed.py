"""Throughput of the whole annotate path against the bare image-encoder forward.

The annotate path is :func:`coreg.annotate.annotate_dataset` -- the library call behind
``coreg annotate`` -- with the embedding cache disabled: uint8 -> PIL -> the model's preprocess in
a DataLoader, image encoding, text encoding of the 27 paper templates x 10 classes, scoring and the
``multi_prompt`` builder. The bare forward is ``model.encode_image`` on the same images already
preprocessed into tensors, same batch size, ``torch.inference_mode``. Both use ViT-B-32 with
random weights (``pretrained=None``: compute is identical to the real model) on the CPU.

Images: the first ``--n`` training images of CIFAR-10 (balanced over classes) from
``/work/shared/data/cifar10-jpeg.tar.gz``, extracted once to ``~/.cache/coreg/data/cifar10``; the
``digits`` dataset when the tarball is missing.

Usage::

    python benchmarks/annotate_speed.py --n 512 --out benchmarks/results/annotate_speed.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARBALL = Path("/work/shared/data/cifar10-jpeg.tar.gz")
CACHE = Path.home() / ".cache" / "coreg" / "data" / "cifar10"


def load_images(n: int) -> tuple[str, list[str], np.ndarray, np.ndarray]:
    """``(source, classes, images uint8 [n, H, W, 3], labels)``: CIFAR-10 JPEGs, else digits."""
    from PIL import Image

    if not (CACHE / "train").is_dir() and TARBALL.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(TARBALL) as tf:
            tf.extractall(CACHE, filter="data")
    if (CACHE / "train").is_dir():
        classes = sorted(d.name for d in (CACHE / "train").iterdir() if d.is_dir())
        per = -(-n // len(classes))
        files = [(f, c) for c, name in enumerate(classes)
                 for f in sorted((CACHE / "train" / name).iterdir())[:per]]
        order = np.argsort([i % per * len(classes) + c for i, (_, c) in enumerate(files)], kind="stable")
        files = [files[i] for i in order][:n]
        imgs = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
        return "cifar10-jpeg", classes, imgs, np.array([c for _, c in files])
    from coreg.data import load_dataset

    b = load_dataset("digits")
    imgs = np.repeat(b.train.images[:n], 3, axis=-1)
    return "digits", b.classes, imgs, b.train.labels[:n]


def main() -> None:
    """Run the benchmark and write the JSON result."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="images")
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--repeats", type=int, default=2, help="alternating repeats; the best of each is kept")
    ap.add_argument("--out", default="benchmarks/results/annotate_speed.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    from coreg.annotate import (
        AnnotateConfig,
        annotate_dataset,
        encode_text_embeddings,
        load_clip,
        load_templates,
    )
    from coreg.annotate.clip import _ArrayImages
    from coreg.data.datasets import DataBundle, ImageSpec, ImageSplit

    source, classes, images, labels = load_images(args.n)
    n = len(images)
    bundle = DataBundle(name=f"bench-{source}", classes=classes,
                        train=ImageSplit(images=images, labels=labels, ids=[str(i) for i in range(n)]), test=None,
                        spec=ImageSpec(size=images.shape[1], channels=3, mean=(0.5,) * 3, std=(0.5,) * 3))

    t = time.perf_counter()
    clip = load_clip(args.model, "none", device="cpu")
    load_s = time.perf_counter() - t

    ds = _ArrayImages(images, clip.preprocess)
    t = time.perf_counter()
    pre = torch.stack([ds[i] for i in range(n)])
    preprocess_s = time.perf_counter() - t
    batches = list(pre.split(args.batch_size))
    templates = load_templates("paper").templates
    cfg = AnnotateConfig(model=args.model, pretrained="none", cache_dir=None, batch_size=args.batch_size,
                         device="cpu", workers=0)

    with torch.inference_mode():
        clip.model.encode_image(batches[0][:8])  # warm-up

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                clip.model.encode_image(b)
        return time.perf_counter() - t0

    def full() -> float:
        t0 = time.perf_counter()
        annotate_dataset(bundle, cfg, clip=clip, progress=False)
        return time.perf_counter() - t0

    def text() -> float:
        t0 = time.perf_counter()
        encode_text_embeddings(clip, templates, [[c] for c in classes], batch_size=max(args.batch_size, 64))
        return time.perf_counter() - t0

    bare_s, full_s, text_s = [], [], []
    for _ in range(args.repeats):
        bare_s.append(bare())
        full_s.append(full())
        text_s.append(text())
    bare_best, full_best, text_best = min(bare_s), min(full_s), min(text_s)
    result: dict[str, Any] = {
        "model": args.model, "pretrained": None, "device": "cpu", "threads": args.threads, "images": n,
        "source": source, "batch_size": args.batch_size, "templates": len(templates), "classes": len(classes),
        "model_load_s": round(load_s, 3),
        "bare_encoder_img_per_s": round(n / bare_best, 2),
        "annotate_img_per_s": round(n / full_best, 2),
        "ratio": round(bare_best / full_best, 4),
        "text_encode_s": round(text_best, 3),
        "preprocess_img_per_s": round(n / preprocess_s, 1),
        "bare_s_all": [round(x, 3) for x in bare_s], "annotate_s_all": [round(x, 3) for x in full_s],
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    rows = [("bare image encoder (preprocessed tensors)", result["bare_encoder_img_per_s"], "1.000"),
            ("annotate_dataset (cache off, whole path)", result["annotate_img_per_s"], f"{result['ratio']:.3f}")]
    print(f"{args.model} random weights, CPU, {args.threads} thread(s), {n} {source} images, batch "
          f"{args.batch_size}, {len(templates)} templates x {len(classes)} classes\n")
    print("| path | images/s | vs bare |\n| --- | ---: | ---: |")
    for name, ips, ratio in rows:
        print(f"| {name} | {ips:.1f} | {ratio} |")
    print(f"\ntext encoding (270 prompts, once per run): {text_best:.2f} s; preprocessing alone: "
          f"{result['preprocess_img_per_s']:.0f} img/s; model load {load_s:.2f} s (not in either timing)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
