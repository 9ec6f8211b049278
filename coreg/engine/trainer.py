"""The training loop shared by every method.

The engine owns: device choice, bf16 autocast and channels_last, the seeded per-epoch generators,
optimiser stepping, the cosine LR, per-epoch evaluation (test accuracy of every network and of
the eval module, label-free selection metrics on a held-out part of the training data), an atomic
checkpoint after every epoch, resuming, and logging through a :class:`~coreg.tracking.Tracker`.
It imports neither mlflow nor optuna: callers pass a tracker and epoch callbacks.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from coreg.data.annotations import Annotation
from coreg.data.datasets import DataBundle
from coreg.data.transforms import Augmenter, to_tensor_images
from coreg.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from coreg.engine.config import TrainConfig
from coreg.engine.evaluate import accuracy, approximated_accuracy, covering_rate, predict_logits
from coreg.engine.resume import check_resume_config
from coreg.engine.schedule import cosine_lr
from coreg.engine.seed import derive_seed, epoch_generators
from coreg.errors import CoregError
from coreg.methods.base import EpochContext, Method, StepContext, TrainData
from coreg.student import Student
from coreg.tracking.base import NullTracker, Tracker

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after every epoch with ``(epoch, metrics)``; may raise to stop (e.g. Optuna pruning)."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu.

    Raises:
        CoregError: an explicitly requested device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CoregError("--device cuda requested but no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CoregError("--device mps requested but MPS is not available")
    return torch.device(name)


def use_bf16(amp: str, device: torch.device) -> bool:
    """``auto``: bf16 autocast on CUDA, and on CPUs with AMX (where it is about 3x faster)."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has_amx_bf16()
    return False


def _cpu_has_amx_bf16() -> bool:
    """Whether the CPU has native bf16 (AMX or AVX512-bf16): bf16 autocast is then ~2-3x faster."""
    if "AMX" in str(torch.backends.cpu.get_cpu_capability()).upper():
        return True
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split()
                    return "amx_bf16" in flags or "avx512_bf16" in flags
    except OSError:
        return False
    return False


@dataclass
class EvalSets:
    """Held-out data the engine evaluates on each epoch (uint8 images on the device)."""

    test_images: Tensor | None = None
    test_labels: Tensor | None = None
    val_images: Tensor | None = None
    val_candidates: Tensor | None = None
    val_gold: Tensor | None = None  # few-shot gold labels of validation images (-1 = unknown)


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    metrics: dict[str, float]
    history: list[dict[str, float]]
    student: Student
    out_dir: Path
    selection_metric: str | None = None
    best_epoch: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def prepare_data(
    bundle: DataBundle, annotation: Annotation, cfg: TrainConfig, *, device: torch.device,
    gold: np.ndarray | None = None,
) -> tuple[TrainData, EvalSets, dict[str, Any]]:
    """Move a dataset + annotation to the device and split off the selection hold-out.

    Args:
        bundle: the dataset (its gold labels, if any, are used for diagnostics only).
        annotation: candidate sets for ``bundle.train`` (already checked against it).
        cfg: train config (``val_fraction``, ``seed``, ``channels_last``, ``strong_augment``).
        device: training device.
        gold: optional few-shot gold labels ``[N]`` (-1 = unknown): training images among them
            become trusted one-hot candidates; validation images among them give ``val_acc``.

    Returns:
        ``(train_data, eval_sets, info)``; ``info["train_index"]`` / ``info["val_index"]`` map
        back to rows of the annotation.
    """
    n = annotation.num_samples
    k = annotation.num_classes
    rng = np.random.default_rng(derive_seed(cfg.seed, "val-split"))
    n_val = int(round(cfg.val_fraction * n))
    perm = rng.permutation(n)
    val_idx = np.sort(perm[:n_val])
    tr_idx = np.sort(perm[n_val:])
    images = to_tensor_images(bundle.train.images, device)
    cand = torch.from_numpy(annotation.candidates.astype(np.float32)).to(device)
    scores = torch.from_numpy(annotation.soft_labels()).to(device) if annotation.scores is not None else None
    noisy = torch.from_numpy(annotation.single_labels()).to(device)
    gold_all = torch.from_numpy(bundle.train.labels).to(device) if bundle.train.labels is not None else None
    trusted = None
    tr_t = torch.from_numpy(tr_idx).to(device)
    val_t = torch.from_numpy(val_idx).to(device)
    if gold is not None:
        g = torch.from_numpy(np.asarray(gold, dtype=np.int64)).to(device)
        known = g >= 0
        onehot = torch.zeros(n, k, device=device)
        onehot[known.nonzero().flatten(), g[known]] = 1.0
        cand = torch.where(known[:, None], onehot, cand)
        if scores is not None:
            scores = torch.where(known[:, None], onehot, scores)
        trusted = known[tr_t]
    aug = Augmenter(bundle.spec, strong=cfg.strong_augment, channels_last=cfg.channels_last)
    data = TrainData(
        images=images[tr_t], candidates=cand[tr_t], scores=scores[tr_t] if scores is not None else None,
        noisy_labels=noisy[tr_t], gold=gold_all[tr_t] if gold_all is not None else None, spec=bundle.spec,
        augment=aug, classes=list(bundle.classes), trusted=trusted,
    )
    evals = EvalSets()
    if bundle.test is not None and bundle.test.labels is not None:
        evals.test_images = to_tensor_images(bundle.test.images, device)
        evals.test_labels = torch.from_numpy(bundle.test.labels).to(device)
    if n_val:
        evals.val_images = images[val_t]
        evals.val_candidates = cand[val_t]
        if gold is not None:
            vg = torch.from_numpy(np.asarray(gold, dtype=np.int64)).to(device)[val_t]
            evals.val_gold = vg if bool((vg >= 0).any()) else None
    info = {"train_index": tr_idx, "val_index": val_idx, "num_train": len(tr_idx), "num_val": len(val_idx)}
    return data, evals, info


class Trainer:
    """Runs a :class:`Method` for ``cfg.epochs`` epochs with checkpoints, evaluation and tracking.

    Args:
        cfg: train config.
        method: the method (already holding its networks, on ``device``).
        data: training data on the device.
        evals: evaluation sets.
        out_dir: where ``checkpoint.pt`` and ``student.pt`` go.
        tracker: where metrics go (``NullTracker`` by default).
        callbacks: called after each epoch with ``(epoch, metrics)``.
        student_meta: ``data`` / ``source`` descriptions stored in the student.
        progress: show tqdm bars.
        reference: the annotator's own accuracies (``annotator_test_acc`` on the same test split,
            ``annotator_train_acc``), logged every epoch beside the student's, see
            :func:`annotator_reference`.
    """

    def __init__(self, cfg: TrainConfig, method: Method, data: TrainData, evals: EvalSets, *, out_dir: str | Path,
                 device: torch.device, tracker: Tracker | None = None, callbacks: Sequence[EpochCallback] = (),
                 student_meta: dict[str, Any] | None = None, progress: bool = True,
                 reference: dict[str, float] | None = None) -> None:
        self.cfg = cfg
        self.method = method
        self.data = data
        self.evals = evals
        self.out_dir = Path(out_dir)
        self.device = device
        self.tracker = tracker or NullTracker()
        self.callbacks = list(callbacks)
        self.meta = student_meta or {}
        self.progress = progress
        self.reference = dict(reference or {})
        self.bf16 = use_bf16(cfg.amp, device)
        self.optimizers = method.configure_optimizers()
        self.history: list[dict[str, float]] = []
        self.start_epoch = 0
        self.selection_metric = ("val_acc" if evals.val_gold is not None else
                                 "val_approx_acc" if evals.val_images is not None else None)
        self.best: dict[str, Any] = {"value": -math.inf, "epoch": None}
        # the epoch co-training starts at: fixed at cfg.warmup, or decided at run time (warmup_patience)
        self.warmup_end: int | None = cfg.warmup if (cfg.warmup_patience == 0 or cfg.warmup in (0, cfg.epochs)) else None

    # ----------------------------------------------------------------- checkpoints

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "method": self.method.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "extra": self.method.extra_state(),
            "history": self.history,
            "best": self.best,
            "warmup_end": self.warmup_end,
            "config": self.cfg.to_dict(),
            "fingerprint": self.meta.get("data", {}).get("fingerprint"),
            "source": self.meta.get("source", {}),
        }

    def resume(self) -> bool:
        """Load ``out_dir/checkpoint.pt``; returns whether a run was resumed.

        Raises:
            CoregError: no checkpoint, or one of other data, or of other hyper-parameters (only a
                larger ``epochs`` may differ, see :mod:`coreg.engine.resume`).
        """
        path = self.out_dir / CHECKPOINT_FILE
        if not path.exists():
            raise CoregError(f"nothing to resume: {self.out_dir} holds no {CHECKPOINT_FILE} (start without --resume)")
        st = load_checkpoint(path)
        fp = self.meta.get("data", {}).get("fingerprint")
        if st.get("fingerprint") and fp and st["fingerprint"] != fp:
            raise CoregError(f"checkpoint {path} was trained on other data (fingerprint {st['fingerprint']} != {fp})")
        extended = check_resume_config(dict(st.get("config", {})), self.cfg.to_dict(), where=str(self.out_dir))
        if "epochs" in extended:
            self.tracker.set_tags({"coreg.epochs_extended": "{} -> {}".format(*extended["epochs"])})
        self.method.load_state_dict(st["method"])
        for k, o in self.optimizers.items():
            o.load_state_dict(st["optimizers"][k])
        self.method.load_extra_state(st.get("extra", {}))
        self.history = list(st.get("history", []))
        self.best = dict(st.get("best", self.best))
        if "warmup_end" in st:
            self.warmup_end = st["warmup_end"]
        self.start_epoch = int(st["epoch"]) + 1
        logger.info("resumed from %s at epoch %d", path, self.start_epoch)
        return True

    def student(self) -> Student:
        """The current student (copies of the evaluated networks on the CPU)."""
        import copy

        nets = [copy.deepcopy(n).cpu().eval() for n in self.method.eval_nets().values()]
        return Student(nets=nets, classes=list(self.data.classes), spec=self.data.spec,
                       data=dict(self.meta.get("data", {})), source=dict(self.meta.get("source", {})))

    # ----------------------------------------------------------------- evaluation

    def evaluate(self) -> dict[str, float]:
        """Test accuracy of each network and of the eval module; label-free selection metrics."""
        out: dict[str, float] = {}
        ev = self.evals
        tf = self.data.augment.test
        bs = self.cfg.eval_batch_size
        nets = self.method.eval_nets()
        if ev.test_images is not None and ev.test_labels is not None:
            logits_sum = None
            for name, net in nets.items():
                lg = predict_logits(net, ev.test_images, transform=tf, batch_size=bs, autocast=self.bf16)
                out[f"test_acc_{name}"] = accuracy(lg.argmax(1), ev.test_labels)
                logits_sum = lg if logits_sum is None else logits_sum + lg
            if logits_sum is not None:
                out["test_acc"] = accuracy(logits_sum.argmax(1), ev.test_labels)
        if ev.val_images is not None and ev.val_candidates is not None:
            lg = predict_logits(self.method.eval_module(), ev.val_images, transform=tf, batch_size=bs,
                                autocast=self.bf16)
            pred = lg.argmax(1)
            if len(nets) >= 2:  # label-free: the share of held-out images every network labels alike
                preds = [predict_logits(net, ev.val_images, transform=tf, batch_size=bs, autocast=self.bf16).argmax(1)
                         for net in nets.values()]
                out["val_agreement"] = float(torch.stack([q == preds[0] for q in preds[1:]]).all(0).float().mean())
            out["val_covering_rate"] = covering_rate(pred, ev.val_candidates)
            out["val_approx_acc"] = approximated_accuracy(lg, ev.val_candidates)
            if ev.val_gold is not None:
                known = ev.val_gold >= 0
                out["val_acc"] = accuracy(pred[known], ev.val_gold[known])
        return out

    # ----------------------------------------------------------------- the loop

    def fit(self, *, resume: bool = False) -> FitResult:
        """Train from the start (or from the checkpoint with ``resume``) to ``cfg.epochs``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        elif (self.out_dir / CHECKPOINT_FILE).exists():
            raise CoregError(f"{self.out_dir} already holds a checkpoint; pass --resume to continue it, "
                             "or choose another --out")
        cfg = self.cfg
        for epoch in range(self.start_epoch, cfg.epochs):
            metrics = self.run_epoch(epoch)
            self.history.append(metrics)
            self._decide_warmup_end(epoch)
            sel = metrics.get(self.selection_metric) if self.selection_metric else None
            if sel is not None and sel == sel and sel > self.best["value"]:
                self.best = {"value": sel, "epoch": epoch}
                self.student().save(self.out_dir / "student_best.pt")
            self.tracker.log_metrics(metrics, step=epoch)
            save_checkpoint(self.out_dir / CHECKPOINT_FILE, self._state(epoch))
            for cb in self.callbacks:
                cb(epoch, metrics)
        student = self.student()
        student.save(self.out_dir / "student.pt")
        final = dict(self.history[-1]) if self.history else {}
        if self.history and any("test_acc" in h for h in self.history):
            final["best_test_acc"] = max(h.get("test_acc", -1.0) for h in self.history)
        final.update(gain_vs_annotator(final))
        final["warmup_epochs"] = float(sum(h.get("warmup_epoch", 0.0) for h in self.history))
        return FitResult(metrics=final, history=self.history, student=student, out_dir=self.out_dir,
                         selection_metric=self.selection_metric, best_epoch=self.best.get("epoch"))

    def effective_warmup(self, epoch: int) -> int:
        """The warm-up length epoch ``epoch`` runs under: the decided end, or (while an adaptive
        warm-up is still undecided) one past ``epoch``, so that ``epoch`` is a warm-up epoch."""
        if self.warmup_end is not None:
            return self.warmup_end
        return max(self.cfg.warmup, epoch + 1)

    def _decide_warmup_end(self, epoch: int) -> None:
        """Adaptive warm-up (``warmup_patience`` > 0): after at least ``warmup`` epochs, warm-up ends
        once the label-free selection metric has not improved by ``warmup_min_delta`` over its best
        for ``warmup_patience`` epochs (without a selection metric it ends at ``warmup``), and only
        while at least ``warmup_min_after`` epochs remain: past that point it runs to the end."""
        cfg = self.cfg
        if self.warmup_end is not None or epoch + 1 < cfg.warmup:
            return
        if cfg.epochs - (epoch + 1) < cfg.warmup_min_after:
            return  # too late for the next phase to pay back its switch: warm up to the end
        agreement = self.history[-1].get("val_agreement") if self.history else None
        if cfg.warmup_min_agreement > 0 and agreement is not None and agreement < cfg.warmup_min_agreement:
            return  # the networks disagree too often for their pseudo-labels to teach anything yet
        key = self.selection_metric
        vals = [h.get(key, float("nan")) for h in self.history] if key else []
        vals = [v for v in vals if v == v]
        n = cfg.warmup_patience
        if vals and len(vals) <= n:
            return  # too short a history to judge yet
        if not vals or max(vals[-n:]) < max(vals[:-n]) + cfg.warmup_min_delta:
            self.warmup_end = epoch + 1
            why = (f"{key} has not improved by {cfg.warmup_min_delta} for {n} epochs" if vals
                   else "no label-free metric to follow")
            if agreement is not None and cfg.warmup_min_agreement > 0:
                why += f", the networks agree on {agreement:.2f} of the held-out images"
            logger.info("warm-up ends after epoch %d (%s)", epoch + 1, why)
            self.tracker.set_tags({"coreg.warmup_end": str(epoch + 1)})

    def run_epoch(self, epoch: int) -> dict[str, float]:
        """One epoch: LR, the method's plan, every phase's steps, evaluation."""
        cfg = self.cfg
        lr = cosine_lr(epoch, base_lr=cfg.lr, period=cfg.lr_period or cfg.epochs, decay_rate=cfg.lr_decay_rate)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        gen, rng = epoch_generators(cfg.seed, epoch)
        warmup = self.effective_warmup(epoch)
        ctx = EpochContext(epoch=epoch, num_epochs=cfg.epochs, warmup=warmup, data=self.data, generator=gen,
                           rng=rng, seed=cfg.seed, device=self.device, min_steps=cfg.min_steps_per_epoch)
        self.method.train()
        t0 = time.perf_counter()
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            plan = self.method.on_epoch_start(ctx)
        t_plan = time.perf_counter() - t0
        sums: dict[str, Any] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        steps = 0
        for phase, batches in plan.phases.items():
            opt = self.optimizers[phase]
            total = plan.lengths.get(phase)
            bar = tqdm(batches, total=total, desc=f"epoch {epoch} {phase}", leave=False,
                       disable=not self.progress, mininterval=1.0)
            for b_idx, batch in enumerate(bar):
                if epoch < cfg.lr_warmup_epochs:
                    frac = (epoch + (b_idx + 1) / total if total else epoch + 1) / cfg.lr_warmup_epochs
                    for group in opt.param_groups:
                        group["lr"] = lr * min(1.0, frac)
                sctx = StepContext(epoch=epoch, warmup=warmup, phase=phase, batch_index=b_idx,
                                   num_batches=total or 0, generator=gen, rng=rng, data=self.data, optimizer=opt)
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                    out = self.method.training_step(batch, sctx)
                loss = out.losses["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                for key, v in {"loss": loss.detach(), **out.report}.items():
                    sums[f"{phase}_{key}"] = sums[f"{phase}_{key}"] + (v.detach() if isinstance(v, Tensor) else v)
                    counts[f"{phase}_{key}"] += 1
        train_time = time.perf_counter() - t0
        metrics: dict[str, float] = {"lr": lr, "epoch_time": train_time, "plan_time": t_plan, "steps": float(steps),
                                     "warmup_epoch": float(epoch < warmup)}
        for key, total_v in sums.items():
            metrics[key] = float(total_v) / counts[key]
        bad = [k for k, v in metrics.items() if k.endswith("_loss") and not math.isfinite(v)]
        if bad:
            raise CoregError(f"training diverged at epoch {epoch} ({', '.join(bad)} not finite); "
                             f"the last good checkpoint is in {self.out_dir}; try a lower --set lr=...")
        phase_losses = [metrics[f"{p}_loss"] for p in plan.phases if f"{p}_loss" in metrics]
        if phase_losses:
            metrics["train_loss"] = float(np.mean(phase_losses))
        metrics.update({k: float(v) for k, v in plan.report.items()})
        metrics.update({k: float(v) for k, v in self.method.on_epoch_end(ctx).items()})
        t1 = time.perf_counter()
        metrics.update(self.evaluate())
        metrics["eval_time"] = time.perf_counter() - t1
        metrics.update(self.reference)
        logger.info("epoch %d/%d lr %.5f loss %.4f test_acc %s (%.1fs)", epoch + 1, cfg.epochs, lr,
                    metrics.get("train_loss", float("nan")),
                    f"{metrics['test_acc']:.4f}" if "test_acc" in metrics else "-", train_time)
        return metrics


def annotator_reference(annotation: Annotation, bundle: DataBundle) -> dict[str, float]:
    """The annotator's own accuracy, to report beside the student's.

    ``annotator_test_acc``: argmax of the annotation's test-split scores against the test gold labels
    (CLIP annotations and the ``instance`` simulation carry them); ``annotator_train_acc``: its single
    label against the training gold labels. Keys are absent where the gold labels or scores are.
    """
    from coreg.methods.baselines.zero_shot import zero_shot_accuracy

    try:
        acc = zero_shot_accuracy(annotation, bundle)
    except ValueError as e:  # test scores of another test split: report nothing rather than a wrong number
        logger.warning("annotator accuracy not reported: %s", e)
        return {}
    out = {}
    if "test_acc" in acc:
        out["annotator_test_acc"] = acc["test_acc"]
    if "annotator_train_acc" in acc:
        out["annotator_train_acc"] = acc["annotator_train_acc"]
    return out


def gain_vs_annotator(metrics: dict[str, float]) -> dict[str, float]:
    """``gain_vs_annotator`` = student test accuracy - the annotator's, on the same test split when the
    annotation has test scores (else against its training-split accuracy, flagged by
    ``gain_vs_annotator_split`` = 1 for test, 0 for train)."""
    if "test_acc" not in metrics:
        return {}
    for key, split in (("annotator_test_acc", 1.0), ("annotator_train_acc", 0.0)):
        if key in metrics:
            return {"gain_vs_annotator": metrics["test_acc"] - metrics[key], "gain_vs_annotator_split": split}
    return {}


def build_method(cfg: TrainConfig, data: TrainData, *, device: torch.device) -> Method:
    """Create the configured method with a seeded model factory, on ``device``."""
    from coreg.methods import get_method
    from coreg.models import create_model

    spec = data.spec

    def factory() -> torch.nn.Module:
        return create_model(cfg.model.name, num_classes=data.num_classes, in_channels=spec.channels,
                            setting=spec.setting, width=cfg.model.width, proj_dim=cfg.model.proj_dim)

    cls = get_method(cfg.method_name)
    if not isinstance(cfg.method, cls.config_cls):
        raise CoregError(f"config for method {cfg.method_name} must be {cls.config_cls.__name__}")
    # Weight initialisation is the only use of the global RNG: fork it so callers are unaffected.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        method = cls(cfg.method, data=data, model_factory=factory,
                     optim={"lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay})
    method.to(device)
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    return method


def fit(
    cfg: TrainConfig, bundle: DataBundle, annotation: Annotation, *, out_dir: str | Path,
    tracker: Tracker | None = None, resume: bool = False, callbacks: Sequence[EpochCallback] = (),
    gold: np.ndarray | None = None, source: dict[str, Any] | None = None, progress: bool = True,
) -> FitResult:
    """Train ``cfg.method_name`` on ``bundle`` with ``annotation``: the library entry point of ``coreg train``."""
    annotation.check_against(bundle)
    device = resolve_device(cfg.device)
    data, evals, info = prepare_data(bundle, annotation, cfg, device=device, gold=gold)
    method = build_method(cfg, data, device=device)
    meta = {"data": bundle.describe() | {"annotator": annotation.annotator.get("kind")},
            "source": {"method": cfg.method_name, **(source or {})}}
    meta["data"].pop("classes", None)
    trainer = Trainer(cfg, method, data, evals, out_dir=out_dir, device=device, tracker=tracker,
                      callbacks=callbacks, student_meta=meta, progress=progress,
                      reference=annotator_reference(annotation, bundle))
    result = trainer.fit(resume=resume)
    result.extras.update(info)
    result.extras["trainer"] = trainer
    return result
