"""Training throughput per Co-Reg phase (warm-up, divide, co-training), fp32 vs bf16+channels_last,
widths 1.0 and 0.25, on a real CIFAR-10 subset; plus the share of step time spent making views.

    python benchmarks/train_speed.py [--images 1024] [--steps 3] [--widths 1.0,0.25] [--out benchmarks/results/train_speed.json]

Images/s counts source images per second (a co-training image yields 4 views and ~26 forward
equivalents, spec 7.1, so its rate is far below warm-up's). "aug share" is the time spent in
the augmentation calls divided by the phase's wall time (on a GPU, with synchronisation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks._data import cifar10_subset
from coreg.data.annotations import Annotation
from coreg.data.candidates import flip_candidates
from coreg.data.transforms import Augmenter
from coreg.engine import TrainConfig
from coreg.engine.seed import epoch_generators
from coreg.engine.trainer import build_method, prepare_data, resolve_device
from coreg.methods.base import EpochContext, StepContext


class TimedAugmenter(Augmenter):
    """Augmenter that accumulates the time spent making views."""

    elapsed = 0.0

    def _timed(self, fn, *a):  # noqa: ANN001, ANN202
        if self._sync:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*a)
        if self._sync:
            torch.cuda.synchronize()
        TimedAugmenter.elapsed += time.perf_counter() - t
        return out

    def weak(self, x, generator):  # noqa: ANN001, ANN201
        return self._timed(super().weak, x, generator)

    def strong(self, x, generator):  # noqa: ANN001, ANN201
        return self._timed(super().strong, x, generator)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(bundle, ann, *, width: float, bf16: bool, steps: int, device: torch.device,  # noqa: ANN001
          batch_size: int) -> dict[str, float]:
    cfg = TrainConfig.for_method("coreg").with_overrides([
        f"model.width={width}", f"amp={'bf16' if bf16 else 'off'}", f"channels_last={bf16}", "val_fraction=0",
        "warmup=1", "epochs=20", "method.start_cont=0", f"method.batch_size={batch_size}"])
    data, _, _ = prepare_data(bundle, ann, cfg, device=device)
    aug = TimedAugmenter(bundle.spec, channels_last=cfg.channels_last)
    aug._sync = device.type == "cuda"
    data.augment = aug
    method = build_method(cfg, data, device=device)
    opts = method.configure_optimizers()
    res: dict[str, float] = {}

    def run(epoch: int, phase: str, max_steps: int) -> tuple[float, float, int]:
        gen, rng = epoch_generators(0, epoch)
        ctx = EpochContext(epoch=epoch, num_epochs=20, warmup=1, data=data, generator=gen, rng=rng, seed=0, device=device)
        method.train()
        _sync(device)
        TimedAugmenter.elapsed = 0.0
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            plan = method.on_epoch_start(ctx)
        _sync(device)
        t_plan = time.perf_counter() - t0
        aug_plan = TimedAugmenter.elapsed
        TimedAugmenter.elapsed = 0.0
        n_img, t1 = 0, time.perf_counter()
        for i, batch in enumerate(plan.phases[phase]):
            if i >= max_steps:
                break
            sctx = StepContext(epoch=epoch, warmup=1, phase=phase, batch_index=i, num_batches=max_steps,
                               generator=gen, rng=rng, data=data)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = method.training_step(batch, sctx)
            opts[phase].zero_grad(set_to_none=True)
            out.losses["loss"].backward()
            opts[phase].step()
            n_img += len(batch["idx"]) if "idx" in batch else len(batch["x_idx"]) + len(batch["u_idx"])
        _sync(device)
        t_steps = time.perf_counter() - t1
        res.setdefault("_plan", (t_plan, aug_plan))
        return t_steps, TimedAugmenter.elapsed, n_img

    t, a, n = run(0, "net1", steps + 1)  # first step warms up kernels; measure the rest
    t, a, n = run(0, "net1", steps)
    res["warmup_img_s"] = n / t
    res["warmup_aug_share"] = a / t
    res.pop("_plan")
    t, a, n = run(1, "net1", steps)
    t_plan, aug_plan = res.pop("_plan")
    res["divide_img_s"] = 2 * data.num_samples / t_plan  # both networks' Divide passes
    res["divide_aug_share"] = aug_plan / t_plan
    res["cotrain_img_s"] = n / t
    res["cotrain_aug_share"] = a / t
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="training images (CIFAR-10 subset)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--widths", default="1.0,0.25")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=0, help="labelled (= unlabelled) batch; 0: 256 on GPU, 64 on CPU")
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    args = ap.parse_args()
    device = resolve_device(args.device)
    bs = args.batch_size or (256 if device.type == "cuda" else 64)
    bundle = cifar10_subset(max(1, args.images // 10), 10)
    ann = Annotation(candidates=flip_candidates(bundle.train.labels, 10, q=0.1, eta=0.2, seed=0),
                     classes=bundle.classes, annotator={"kind": "flip"}, data=bundle.describe())
    rows = []
    for width in [float(w) for w in args.widths.split(",")]:
        for bf16 in (False, True):
            r = bench(bundle, ann, width=width, bf16=bf16, steps=args.steps, device=device, batch_size=bs)
            rows.append({"width": width, "precision": "bf16+channels_last" if bf16 else "fp32", **r})
            print(f"width {width} {'bf16' if bf16 else 'fp32'}: " + ", ".join(f"{k} {v:.3g}" for k, v in r.items()),
                  flush=True)
    hdr = ("| width | precision | warm-up img/s | divide img/s | co-train img/s | aug share warm-up | "
           "aug share divide | aug share co-train |")
    lines = [hdr, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['width']} | {r['precision']} | {r['warmup_img_s']:.0f} | {r['divide_img_s']:.0f} | "
                     f"{r['cotrain_img_s']:.1f} | {r['warmup_aug_share']:.1%} | {r['divide_aug_share']:.1%} | "
                     f"{r['cotrain_aug_share']:.1%} |")
    table = "\n".join(lines)
    print(f"\ndevice: {device}, {len(bundle.train)} CIFAR-10 images, batch {bs} (+{bs} U; warm-up {2 * bs}), "
          f"threads {torch.get_num_threads()}")
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": str(device), "images": len(bundle.train), "threads": torch.get_num_threads(),
                               "batch_size": bs,
                               "rows": rows, "table": table}, indent=2))


if __name__ == "__main__":
    main()
