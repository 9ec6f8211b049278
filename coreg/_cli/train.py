"""``coreg train``: one tracked training run (also used by ``coreg tune`` for each trial)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from coreg._cli._common import data_options, handle_errors, load_data
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"
TRAIN_ROOT = Path("outputs") / "train"
_RUN_NAME = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?")


def build_train_config(method: str, *, config_file: str | None = None, overrides: Sequence[str] = (),
                       epochs: int | None = None, warmup: int | None = None, seed: int | None = None,
                       device: str | None = None, base: Any = None, preset: str | None = None) -> Any:
    """Defaults (or ``base``, e.g. a resumed checkpoint's config) < ``preset`` < YAML < ``--set`` < explicit flags."""
    from coreg.config import build_config
    from coreg.engine import TrainConfig

    base = base if base is not None else TrainConfig.for_method(method)
    if preset is not None:
        base = base.with_updates({"preset": preset})
    cfg = build_config(TrainConfig, config_file=config_file, overrides=overrides, base=base)
    flags = {k: v for k, v in {"epochs": epochs, "warmup": warmup, "seed": seed, "device": device}.items()
             if v is not None}
    if "epochs" in flags and "warmup" not in flags and cfg.warmup > flags["epochs"]:
        flags["warmup"] = max(0, flags["epochs"] // 3)
    return cfg.with_updates(flags) if flags else cfg


def gold_labels(bundle: Any, *, gold_file: str | None, shots: int | None, seed: int) -> np.ndarray | None:
    """Few-shot gold labels from ``--gold`` or ``--shots`` (at most one of them)."""
    from coreg.gold import load_gold_file, sample_shots

    if gold_file and shots:
        raise CoregError("use either --gold FILE or --shots K, not both")
    if gold_file:
        return load_gold_file(gold_file, bundle)
    if shots:
        return sample_shots(bundle, shots, seed=seed)
    return None


def log_training_artifacts(tracker: Any, result: Any, cfg: Any, bundle: Any, annotation: Any,
                           *, log_checkpoint: bool = True) -> str | None:
    """Resolved config, student, checkpoint, plots, and the student as an MLflow model."""
    from coreg.data import annotation_stats
    from coreg.engine.evaluate import confusion_matrix, predict_logits
    from coreg.tracking.plots import accuracy_curves, confusion_figure

    tracker.log_text(cfg.to_yaml(), "config.yaml")
    tracker.log_artifact(result.out_dir / "student.pt")
    if (result.out_dir / "student_best.pt").exists():
        tracker.log_artifact(result.out_dir / "student_best.pt")
    if log_checkpoint:
        tracker.log_artifact(result.out_dir / "checkpoint.pt", artifact_path="checkpoint")
    ref = None
    if bundle.train.labels is not None:
        ref = annotation_stats(annotation, bundle.train.labels)["single_label_acc"]
    import matplotlib.pyplot as plt

    fig = accuracy_curves(result.history, reference=ref, reference_label="annotator (train)")
    tracker.log_figure(fig, "accuracy_curve.png")
    plt.close(fig)
    if bundle.test is not None and bundle.test.labels is not None:
        import torch

        from coreg.data.transforms import Augmenter, to_tensor_images

        module = result.student.eval_module()
        imgs = to_tensor_images(bundle.test.images)
        logits = predict_logits(module, imgs, transform=Augmenter(bundle.spec).test)
        cm = confusion_matrix(logits.argmax(1), torch.from_numpy(bundle.test.labels), len(bundle.classes))
        fig = confusion_figure(cm, bundle.classes)
        tracker.log_figure(fig, "confusion_matrix.png")
        plt.close(fig)
    return tracker.log_model(result.student, student_file=result.out_dir / "student.pt")


def train_tracked(*, bundle: Any, annotation: Any, annotation_path: str | None, cfg: Any, out_dir: Path,
                  tracker: Any, resume: bool = False, gold: np.ndarray | None = None, callbacks: Sequence[Any] = (),
                  progress: bool = True, log_checkpoint: bool = True, log_params: bool | None = None) -> Any:
    """Log params/tags, train, log artifacts. ``tracker`` is an open run's tracker (or a NullTracker).

    ``log_params`` defaults to ``not resume`` (a resumed run continues the run that holds them).
    """
    from coreg.engine import fit

    params = cfg.to_params()
    params.update({"data": bundle.name, "annotation": annotation_path or "", "annotator": annotation.annotator.get("kind"),
                   "num_train": len(bundle.train), "gold_labels": int((gold >= 0).sum()) if gold is not None else 0})
    if (not resume) if log_params is None else log_params:
        tracker.log_params(params)
    tracker.set_tags({"coreg.stage": "train", "coreg.method": cfg.method_name, "data_fingerprint": bundle.fingerprint,
                      "annotation_source": annotation.annotator.get("kind"), "data": bundle.name})
    source = {"run_id": tracker.run_id, "annotation": annotation_path, "annotator": annotation.annotator}
    result = fit(cfg, bundle, annotation, out_dir=out_dir, tracker=tracker, resume=resume, callbacks=callbacks,
                 gold=gold, source=source, progress=progress)
    summary = {k: v for k, v in result.metrics.items() if k.startswith(("test_acc", "best_test_acc", "val_", "annotator_", "gain_vs_annotator",
                                                                     "warmup_epochs"))}
    tracker.log_metrics({f"final_{k}": v for k, v in summary.items()})
    if result.best_epoch is not None:
        tracker.log_metrics({"selected_epoch": float(result.best_epoch)})
    uri = log_training_artifacts(tracker, result, cfg, bundle, annotation, log_checkpoint=log_checkpoint)
    result.extras["model_uri"] = uri
    return result


def annotator_summary(m: dict[str, float]) -> str | None:
    """One line saying by how much the student beats or trails its annotator."""
    if "gain_vs_annotator" not in m:
        return None
    gain = 100 * m["gain_vs_annotator"]
    verdict = "beats" if gain > 0 else "trails" if gain < 0 else "ties"
    if m.get("gain_vs_annotator_split") == 1.0:
        return (f"annotator test accuracy: {m['annotator_test_acc']:.4f} on the same test split; the student "
                f"{verdict} it by {abs(gain):.1f} points")
    return (f"annotator single-label accuracy on the training split: {m['annotator_train_acc']:.4f} (no test-split "
            f"annotator scores in this annotation); the student's test accuracy {verdict} it by {abs(gain):.1f} points")


def run_root(bundle: Any, cfg: Any) -> Path:
    """``outputs/train/<data>-<method>-s<seed>``: the folder holding one sub-folder per run."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", bundle.name.replace("folder:", "")).strip("_")[-40:] or "data"
    return TRAIN_ROOT / f"{safe}-{cfg.method_name}-s{cfg.seed}"


def new_run_dir(root: Path) -> Path:
    """A fresh run folder ``root/<YYYYmmdd-HHMMSS>`` (``-1``, ``-2``... when several start in one second)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        d = root / (stamp if i == 0 else f"{stamp}-{i}")
        try:
            d.mkdir()
        except FileExistsError:
            continue
        return d
    raise CoregError(f"cannot create a new run folder under {root}")


def latest_run_dir(root: Path) -> Path:
    """The most recently started run under ``root`` that holds a checkpoint.

    Raises:
        CoregError: no such run.
    """
    from coreg.engine.checkpoint import CHECKPOINT_FILE

    runs = []
    for d in root.iterdir() if root.is_dir() else ():
        m = _RUN_NAME.fullmatch(d.name)
        if m and (d / CHECKPOINT_FILE).is_file():
            runs.append(((m.group(1), int(m.group(2) or 0)), d))
    if not runs:
        raise CoregError(f"nothing to resume: no run under {root} has a checkpoint (start without --resume, "
                         "or pass --out DIR of the run to continue)")
    return max(runs)[1]


def _previous_run_id(run_file: Path) -> str | None:
    try:
        return str(json.loads(run_file.read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@click.command("train")
@data_options
@click.option("--annotations", "annotations", required=True, type=click.Path(dir_okay=False),
              help="Annotation file (.npz) from annotate, import or simulate.")
@click.option("--method", default=None, help="Training method (see `coreg methods`; default coreg, or the resumed run's).")
@click.option("--epochs", type=int, default=None, help="Epochs to run (overrides the config; may grow on --resume).")
@click.option("--warmup", type=int, default=None, help="Warm-up epochs W.")
@click.option("--preset", type=click.Choice(["robust", "faithful"]), default=None,
              help="robust (default): budgets that work at any data size; faithful: the reference's behaviour.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML config file.")
@click.option("--set", "overrides", multiple=True, help="Override a config value: --set method.lambda_u=0.5")
@click.option("--seed", type=int, default=None, help="Seed of every random draw.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for checkpoints and the student (default: a new folder "
                   "outputs/train/<data>-<method>-s<seed>/<date-time> per run).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out from its last checkpoint (without --out: the latest run of this "
                   "data/method/seed). Settings come from the checkpoint; only a larger --epochs may change, with a "
                   "fixed lr_period.")
@click.option("--gold", "gold_file", type=click.Path(dir_okay=False), default=None,
              help="Few-shot gold labels: CSV 'image,class' or JSONL.")
@click.option("--shots", type=int, default=None, help="Benchmarks: reveal K gold labels per class.")
@click.option("--experiment", default="coreg-train", show_default=True, help="MLflow experiment.")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--no-progress", is_flag=True, help="Hide all progress bars.")
@handle_errors
def train_cmd(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float, annotations: str,
              method: str | None, preset: str | None, epochs: int | None, warmup: int | None, config_file: str | None,
              overrides: tuple[str, ...], seed: int | None, device: str | None, out_dir: str | None, resume: bool,
              gold_file: str | None, shots: int | None, experiment: str, run_name: str | None, no_track: bool,
              no_progress: bool) -> None:
    """Train a student on candidate labels (Co-Reg or a baseline), tracked in MLflow.

    Each run gets a new folder; --resume continues one (a killed run's MLflow run included).
    """
    from coreg.progress import progress_bars

    with progress_bars(not no_progress):
        _train(data=data, data_dir=data_dir, download=download, split_seed=split_seed, split_ratio=split_ratio,
               annotations=annotations, method=method, flags={"epochs": epochs, "warmup": warmup, "seed": seed,
                                                              "device": device, "preset": preset},
               config_file=config_file, overrides=overrides, out_dir=out_dir, resume=resume, gold_file=gold_file,
               shots=shots, experiment=experiment, run_name=run_name, no_track=no_track, progress=not no_progress)


def _train(*, data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float,
           annotations: str, method: str | None, flags: dict[str, Any], config_file: str | None,
           overrides: Sequence[str], out_dir: str | None, resume: bool, gold_file: str | None, shots: int | None,
           experiment: str, run_name: str | None, no_track: bool, progress: bool) -> None:
    from coreg.data import load_annotation_for
    from coreg.engine.checkpoint import CHECKPOINT_FILE, load_checkpoint
    from coreg.engine.resume import check_resume_config

    cfg = build_train_config(method or "coreg", config_file=config_file, overrides=overrides, **flags)
    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = load_annotation_for(annotations, bundle)
    root = run_root(bundle, cfg)
    if resume:
        out = Path(out_dir) if out_dir else latest_run_dir(root)
        if not (out / CHECKPOINT_FILE).is_file():
            raise CoregError(f"nothing to resume: {out} holds no {CHECKPOINT_FILE} (start without --resume)")
        state = load_checkpoint(out / CHECKPOINT_FILE)
        old = dict(state.get("config") or {})
        from coreg.engine import TrainConfig

        try:
            base = TrainConfig.for_method(old["method_name"]).with_updates(old)
        except (KeyError, ValueError) as e:
            raise CoregError(f"checkpoint {out / CHECKPOINT_FILE} holds no usable config ({e})") from None
        # The checkpoint's settings are the base: flags only need repeating where they change something.
        cfg = build_train_config(method or base.method_name, config_file=config_file, overrides=overrides,
                                 base=base, **flags)
        check_resume_config(old, cfg.to_dict(), where=str(out), log=False)
        done = int(state["epoch"]) + 1
    else:
        out = Path(out_dir) if out_dir else None
        if out is not None and (out / CHECKPOINT_FILE).exists():
            raise CoregError(f"{out} already holds a checkpoint; pass --resume to continue it, or leave out --out "
                             "(every run gets a new folder)")
    gold = gold_labels(bundle, gold_file=gold_file, shots=shots, seed=cfg.seed)
    if resume:
        click.echo(f"resuming {out} after epoch {done} of {cfg.epochs}"
                   + ("" if out_dir else f" (the latest run of {root.name})"))
        if done >= cfg.epochs:
            click.echo(f"nothing to do: {out} already ran all {done} epochs (pass a larger --epochs to extend it)")
            return
    # A folder made by this run is removed again if the run fails before its first checkpoint.
    created = None
    if out is None:
        out = created = new_run_dir(root)
    elif not out.exists():
        created = out
    logger.info("run folder %s", out)
    try:
        result, run_id = _fit_tracked(bundle=bundle, annotation=ann, annotation_path=annotations, cfg=cfg, out=out,
                                      resume=resume, gold=gold, progress=progress, no_track=no_track,
                                      experiment=experiment, run_name=run_name or (
                                          f"{root.name}-{out.name}" if created else out.name))
    except BaseException:
        if created is not None and not (created / CHECKPOINT_FILE).exists():
            _remove_new_run_dir(created)
        raise
    m = result.metrics
    n_warm = int(m.get("warmup_epochs", cfg.warmup))
    whole = n_warm >= cfg.epochs and cfg.warmup < cfg.epochs
    agreed = max((h["val_agreement"] for h in result.history if "val_agreement" in h), default=None)
    held = whole and cfg.warmup_patience and agreed is not None and agreed < cfg.warmup_min_agreement
    phase = (f" ({n_warm} warm-up" + (", adaptive" if cfg.warmup_patience else "")
             + (", the whole run" if whole else "")
             + (f": the networks agreed on at most {agreed:.2f} of the held-out images, below "
                f"warmup_min_agreement={cfg.warmup_min_agreement}" if held else "") + ")")
    click.echo(f"trained {cfg.method_name} for {cfg.epochs} epochs{phase} -> {out / 'student.pt'}")
    if "test_acc" in m:
        click.echo(f"test accuracy: {m['test_acc']:.4f} (best {m.get('best_test_acc', m['test_acc']):.4f}; "
                   f"net1 {m.get('test_acc_net1', float('nan')):.4f}, net2 {m.get('test_acc_net2', float('nan')):.4f})")
    line = annotator_summary(m)
    if line:
        click.echo(line)
    if result.selection_metric:
        click.echo(f"label-free selection ({result.selection_metric}): {m.get(result.selection_metric, float('nan')):.4f}")
    if run_id:
        click.echo(f"MLflow run {run_id} (experiment {experiment}); model {result.extras.get('model_uri')}")


def _remove_new_run_dir(path: Path) -> None:
    """Remove a run folder this process created, when the run failed before its first checkpoint.

    Only empty folders go: the folder itself and, for a default folder, the empty
    ``outputs/train/<data>-<method>-s<seed>`` parents made for it.
    """
    (path / RUN_FILE).unlink(missing_ok=True)
    inside = TRAIN_ROOT in path.parents
    for d in [path, *(p for p in path.parents if inside and (p == TRAIN_ROOT or TRAIN_ROOT in p.parents
                                                             or p in TRAIN_ROOT.parents) and p != Path("."))]:
        try:
            d.rmdir()
        except OSError:
            break


def _fit_tracked(*, bundle: Any, annotation: Any, annotation_path: str, cfg: Any, out: Path, resume: bool,
                 gold: np.ndarray | None, progress: bool, no_track: bool, experiment: str,
                 run_name: str) -> tuple[Any, str | None]:
    """Train in ``out``, in a new MLflow run, the folder's earlier one (``resume``), or none (``no_track``)."""
    from coreg.tracking import NullTracker

    kwargs = {"bundle": bundle, "annotation": annotation, "annotation_path": annotation_path, "cfg": cfg,
              "out_dir": out, "resume": resume, "gold": gold, "progress": progress}
    if no_track:
        return train_tracked(tracker=NullTracker(), **kwargs), None
    from coreg.data.annotations import atomic_write_bytes
    from coreg.tracking.mlflow import MlflowTracker, mark_killed, run_status

    run_file = out / RUN_FILE
    prev = _previous_run_id(run_file)
    status = run_status(prev) if prev else None
    if prev and status is None:
        logger.warning("MLflow run %s of %s is not in this tracking store: logging to a new run", prev, out)
    elif prev and not resume and status == "RUNNING":
        # Its process died before the first checkpoint (else this start would have been refused).
        mark_killed(prev)
        logger.warning("marked MLflow run %s of %s, left RUNNING by a process that died, as KILLED", prev, out)
    keep = resume and status is not None
    with MlflowTracker.start(experiment=None if keep else experiment, run_name=None if keep else run_name,
                             run_id=prev if keep else None) as tracker:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_file, json.dumps({"run_id": tracker.run_id}).encode())
        return train_tracked(tracker=tracker, log_params=not keep, **kwargs), tracker.run_id
