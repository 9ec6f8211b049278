"""``coreg export``: a student to ONNX (parity-checked), optionally int8, optionally logged to MLflow.

Usage::

    coreg export --model runs/abc/student.pt --out student.onnx [--single] [--int8]
                 [--data digits] [--tolerance 1e-3] [--no-track] [--register-name NAME] [--force]

Existing output files (the model, ``labels.json``, ``preprocess.json``, the parity report, the int8
model) are refused with a one-line error before any work, unless ``--force``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import click
import numpy as np

from coreg._cli._common import handle_errors
from coreg.errors import CoregError

logger = logging.getLogger(__name__)

PARITY_IMAGES = 64
CALIBRATION_IMAGES = 256
DEFAULT_REGISTERED_NAME = "coreg-student-onnx"


def _registered_name_of(source: str, student_source: dict[str, Any]) -> str | None:
    """The registered model name the student came from, if known."""
    for key in ("registered_model_name", "registered_model", "model_name"):
        if student_source.get(key):
            return str(student_source[key])
    m = re.match(r"^models:/([^/@]+)", source)
    return m.group(1) if m else None


def _load_bundle(student: Any, data: str | None, data_dir: str | None) -> Any:
    """The student's dataset (same split seed/ratio as training), or ``None`` when unknown."""
    from coreg.data import load_dataset

    name = data or student.data.get("name")
    if not name:
        return None
    split = student.data.get("split") or {}
    kwargs: dict[str, Any] = {"data_dir": data_dir}
    if split.get("seed") is not None:
        kwargs["seed"] = int(split["seed"])
    if split.get("ratio") is not None:
        kwargs["split_ratio"] = float(split["ratio"])
    bundle = load_dataset(name, **kwargs)
    spec = student.spec
    if (bundle.spec.size, bundle.spec.channels) != (spec.size, spec.channels):
        raise CoregError(f"dataset {name} has {bundle.spec.size}px x {bundle.spec.channels} channel images, the "
                         f"student expects {spec.size}px x {spec.channels}; pass the student's dataset with --data")
    fp = student.data.get("fingerprint")
    if fp and fp != bundle.fingerprint:
        logger.warning("dataset %s fingerprint %s differs from the student's training data (%s)", name,
                       bundle.fingerprint, fp)
    return bundle


def _track(*, run_id: str, onnx_path: Path, report: Any, int8_path: Path | None, metrics: dict[str, float],
           register_name: str, x_example: np.ndarray) -> tuple[str | None, str | None]:
    """Log the ONNX model to ``run_id`` and register it; returns (model URI, registered version)."""
    import onnx

    from coreg.tracking.mlflow import MlflowTracker

    try:
        with MlflowTracker.start(run_id=run_id) as tracker:
            import mlflow.onnx
            from mlflow.models import infer_signature

            from coreg.export.onnx import ort_session, run_onnx

            logits = run_onnx(ort_session(onnx_path, threads=1), x_example)
            info = mlflow.onnx.log_model(
                onnx.load(str(onnx_path)), name="onnx", registered_model_name=register_name,
                signature=infer_signature(x_example, logits), save_as_external_data=False,
                metadata={k: v for k, v in report.metadata.items()})
            for p in (report.preprocess_path, report.labels_path, report.parity_path, int8_path):
                if p is not None:
                    tracker.log_artifact(p, artifact_path="onnx_export")
            tracker.log_metrics({"export_parity_max_abs_diff": report.parity.max_abs_diff,
                                 "export_parity_top1_agreement": report.parity.top1_agreement,
                                 "export_onnx_size_bytes": float(report.size_bytes), **metrics})
            tracker.set_tags({"onnx_model_uri": info.model_uri})
    except CoregError:
        raise
    except Exception as e:  # noqa: BLE001 - mlflow raises many types (missing run, bad store); one line
        raise CoregError(f"could not log the ONNX model to run {run_id}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''} (use --no-track to skip tracking)") from e
    version = getattr(info, "registered_model_version", None)
    return info.model_uri, (str(version) if version is not None else None)


@click.command("export")
@click.option("--model", "source", required=True,
              help="Student: a student.pt path, a checkpoint folder, an MLflow run id or a models:/ URI.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="ONNX file to write.")
@click.option("--single", is_flag=True, help="Export the first network alone instead of the logit-sum ensemble.")
@click.option("--int8", "int8", is_flag=True, help="Also write <stem>.int8.onnx (static QDQ quantization).")
@click.option("--data", default=None, help="Dataset for parity/calibration images (default: the student's).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="Root of torchvision datasets.")
@click.option("--tolerance", type=float, default=1e-3, show_default=True,
              help="Largest allowed |onnxruntime - torch| logit difference.")
@click.option("--opset", type=int, default=None, help="ONNX opset (default: the exporter's).")
@click.option("--no-track", is_flag=True, help="Do not log the ONNX model to the student's MLflow run.")
@click.option("--register-name", default=None,
              help="Registered model name (default: <source registered name>-onnx, else coreg-student-onnx).")
@click.option("--force", is_flag=True, help="Overwrite an existing model, labels.json or preprocess.json in --out's folder.")
@handle_errors
def export(source: str, out: str, single: bool, int8: bool, data: str | None, data_dir: str | None,
           tolerance: float, opset: int | None, no_track: bool, register_name: str | None, force: bool) -> None:
    """Export a student to ONNX with an onnxruntime-vs-torch parity check (and optionally int8)."""
    from coreg.export import export_student, normalize_images, onnx_accuracy, quantize_int8
    from coreg.export.onnx import export_outputs, refuse_overwrite
    from coreg.tracking.mlflow import load_student

    out_path = Path(out)
    int8_path = out_path.with_name(f"{out_path.stem}.int8.onnx") if int8 else None
    if not force:  # before any work: refuse to replace another export's files
        refuse_overwrite(export_outputs(out_path) + ([int8_path] if int8_path else []))
    student = load_student(source)
    bundle = _load_bundle(student, data, data_dir)
    if bundle is None:
        if int8:
            raise CoregError("--int8 needs calibration images: the student names no dataset, pass --data")
        logger.warning("the student names no dataset and no --data was given: parity on random images")
        parity_images = None
    else:
        split = bundle.test if bundle.test is not None and len(bundle.test) else bundle.train
        parity_images = split.images[:PARITY_IMAGES]

    report = export_student(student, out_path, single=single, parity_images=parity_images, tolerance=tolerance,
                            opset=opset, overwrite=force)
    p = report.parity
    click.echo(f"wrote {report.path} ({report.size_bytes / 1024:.1f} KiB, {report.exporter} exporter, opset "
               f"{report.opset}, {'single network' if single else f'{len(student.nets)}-network ensemble'})")
    click.echo(f"parity on {p.num_images} {'test' if bundle is not None and bundle.test is not None else p.images} "
               f"images: max |onnx - torch| {p.max_abs_diff:.2e} (tolerance {p.tolerance:g}), "
               f"top-1 agreement {p.top1_agreement:.4f}")
    click.echo(f"sidecars: {report.preprocess_path}, {report.labels_path}, {report.parity_path}")

    metrics: dict[str, float] = {}
    if int8_path is not None and bundle is not None:  # bundle is known here: --int8 without data was refused
        quantize_int8(out_path, int8_path, calibration_images=bundle.train.images[:CALIBRATION_IMAGES],
                      spec=student.spec)
        click.echo(f"wrote {int8_path} ({int8_path.stat().st_size / 1024:.1f} KiB, calibrated on "
                   f"{min(CALIBRATION_IMAGES, len(bundle.train))} training images)")
        ev = bundle.test if bundle.test is not None and bundle.test.labels is not None else None
        if ev is None:
            click.echo("no labelled test split: int8 accuracy not measured")
        else:
            fp32_acc = onnx_accuracy(out_path, ev.images, ev.labels, spec=student.spec)
            int8_acc = onnx_accuracy(int8_path, ev.images, ev.labels, spec=student.spec)
            metrics = {"test_acc_onnx_fp32": fp32_acc, "test_acc_onnx_int8": int8_acc,
                       "test_acc_int8_change": int8_acc - fp32_acc}
            click.echo(f"test accuracy ({len(ev)} images): fp32 {fp32_acc:.4f}, int8 {int8_acc:.4f}, change "
                       f"{100 * (int8_acc - fp32_acc):+.2f} points")

    run_id = student.source.get("run_id")
    if no_track:
        return
    if not run_id:
        click.echo("not tracked: the student has no MLflow run id (source.run_id)")
        return
    name = register_name or (f"{base}-onnx" if (base := _registered_name_of(source, student.source))
                             else DEFAULT_REGISTERED_NAME)
    x_example = normalize_images(parity_images[:2], student.spec) if parity_images is not None else \
        np.zeros((2, student.spec.channels, student.spec.size, student.spec.size), dtype=np.float32)
    uri, version = _track(run_id=str(run_id), onnx_path=out_path, report=report, int8_path=int8_path,
                          metrics=metrics, register_name=name, x_example=x_example)
    click.echo(f"logged {uri} to run {run_id}; registered as {name} version {version}")

