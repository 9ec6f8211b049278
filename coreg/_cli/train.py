"""``coreg train``: one tracked training run (also used by ``coreg tune`` for each trial)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from coreg.cli import data_options, handle_errors, load_data
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"


def build_train_config(method: str, *, config_file: str | None = None, overrides: Sequence[str] = (),
                       epochs: int | None = None, warmup: int | None = None, seed: int | None = None,
                       device: str | None = None) -> Any:
    """Defaults < YAML < ``--set`` < explicit flags (``--epochs`` etc.)."""
    from coreg.config import build_config
    from coreg.engine import TrainConfig

    base = TrainConfig.for_method(method)
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
                  progress: bool = True, log_checkpoint: bool = True) -> Any:
    """Log params/tags, train, log artifacts. ``tracker`` is an open run's tracker (or a NullTracker)."""
    from coreg.engine import fit

    params = cfg.to_params()
    params.update({"data": bundle.name, "annotation": annotation_path or "", "annotator": annotation.annotator.get("kind"),
                   "num_train": len(bundle.train), "gold_labels": int((gold >= 0).sum()) if gold is not None else 0})
    if not resume:
        tracker.log_params(params)
    tracker.set_tags({"coreg.stage": "train", "coreg.method": cfg.method_name, "data_fingerprint": bundle.fingerprint,
                      "annotation_source": annotation.annotator.get("kind"), "data": bundle.name})
    source = {"run_id": tracker.run_id, "annotation": annotation_path, "annotator": annotation.annotator}
    result = fit(cfg, bundle, annotation, out_dir=out_dir, tracker=tracker, resume=resume, callbacks=callbacks,
                 gold=gold, source=source, progress=progress)
    summary = {k: v for k, v in result.metrics.items() if k.startswith(("test_acc", "best_test_acc", "val_", "annotator_", "gain_vs_annotator"))}
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


@click.command("train")
@data_options
@click.option("--annotations", "annotations", required=True, type=click.Path(dir_okay=False),
              help="Annotation file (.npz) from annotate, import or simulate.")
@click.option("--method", default="coreg", show_default=True, help="Training method (see `coreg methods`).")
@click.option("--epochs", type=int, default=None, help="Epochs to run (overrides the config).")
@click.option("--warmup", type=int, default=None, help="Warm-up epochs W.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML config file.")
@click.option("--set", "overrides", multiple=True, help="Override a config value: --set method.lambda_u=0.5")
@click.option("--seed", type=int, default=None, help="Seed of every random draw.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for checkpoints and the student (default outputs/train/<data>-<method>-s<seed>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--gold", "gold_file", type=click.Path(dir_okay=False), default=None,
              help="Few-shot gold labels: CSV 'image,class' or JSONL.")
@click.option("--shots", type=int, default=None, help="Benchmarks: reveal K gold labels per class.")
@click.option("--experiment", default="coreg-train", show_default=True, help="MLflow experiment.")
@click.option("--run-name", default=None, help="MLflow run name.")
@click.option("--no-track", is_flag=True, help="Do not log to MLflow.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@handle_errors
def train_cmd(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float, annotations: str,
              method: str, epochs: int | None, warmup: int | None, config_file: str | None, overrides: tuple[str, ...],
              seed: int | None, device: str | None, out_dir: str | None, resume: bool, gold_file: str | None,
              shots: int | None, experiment: str, run_name: str | None, no_track: bool, no_progress: bool) -> None:
    """Train a student on candidate labels (Co-Reg or a baseline), tracked in MLflow."""
    from coreg.data import load_annotation_for
    from coreg.tracking import NullTracker

    cfg = build_train_config(method, config_file=config_file, overrides=overrides, epochs=epochs, warmup=warmup,
                             seed=seed, device=device)
    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = load_annotation_for(annotations, bundle)
    gold = gold_labels(bundle, gold_file=gold_file, shots=shots, seed=cfg.seed)
    safe = bundle.name.replace("folder:", "").replace("/", "_").strip("_")[-40:]
    out = Path(out_dir or Path("outputs") / "train" / f"{safe}-{cfg.method_name}-s{cfg.seed}")
    run_file = out / RUN_FILE
    if no_track:
        result = train_tracked(bundle=bundle, annotation=ann, annotation_path=annotations, cfg=cfg, out_dir=out,
                               tracker=NullTracker(), resume=resume, gold=gold, progress=not no_progress)
        run_id = None
    else:
        from coreg.tracking.mlflow import MlflowTracker

        prev = json.loads(run_file.read_text())["run_id"] if resume and run_file.exists() else None
        with MlflowTracker.start(experiment=experiment, run_name=run_name or out.name, run_id=prev) as tracker:
            out.mkdir(parents=True, exist_ok=True)
            from coreg.data.annotations import atomic_write_bytes

            atomic_write_bytes(run_file, json.dumps({"run_id": tracker.run_id}).encode())
            result = train_tracked(bundle=bundle, annotation=ann, annotation_path=annotations, cfg=cfg, out_dir=out,
                                   tracker=tracker, resume=resume, gold=gold,
                                   progress=not no_progress)
            run_id = tracker.run_id
    m = result.metrics
    click.echo(f"trained {cfg.method_name} for {cfg.epochs} epochs -> {out / 'student.pt'}")
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


@click.command("methods")
def methods_cmd() -> None:
    """List the training methods."""
    from coreg.methods import get_method, list_methods

    for name in list_methods():
        doc = (get_method(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:14s} {doc[0] if doc else ''}")


COMMANDS = [train_cmd, methods_cmd]
