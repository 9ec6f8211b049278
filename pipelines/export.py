"""Entry point ``export``: a registered student to ONNX (parity-checked), logged as run artifacts.

``python -m pipelines.export --model models:/coreg-student/1`` (or ``mlflow run . -e export``).
Runs ``coreg export --no-track`` and logs the folder it writes (``student.onnx``,
``preprocess.json``, ``labels.json``, ``student.onnx.parity.json``; with ``--int8`` also
``student.int8.onnx``) under ``onnx/`` of this step's run: exactly what ``coreg-serve`` needs.
With ``--register-name`` the ONNX model is also logged as an MLflow model and registered.
Outputs: ``onnx`` (``runs:/<run>/onnx``), ``onnx_file``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from pipelines._common import finish_step, run_coreg, run_options, step_main, step_tracker

ENTRY = "export"
ONNX_NAME = "student.onnx"


def run(*, run_id: str, model: str, single: int = 0, int8: int = 0, register_name: str = "",
        data_dir: str = "") -> dict[str, str]:
    """Export ``model`` (``models:/NAME/VERSION``, a run id or a ``student.pt`` path) inside run ``run_id``."""
    with tempfile.TemporaryDirectory(prefix="coreg-export-") as tmp:
        folder = Path(tmp) / "onnx"
        folder.mkdir()
        out = folder / ONNX_NAME
        args = ["export", "--model", model, "--out", str(out), "--no-track"]
        args += ["--single"] if single else []
        args += ["--int8"] if int8 else []
        args += ["--data-dir", data_dir] if data_dir else []
        run_coreg(args)
        with step_tracker(run_id) as tracker:
            tracker.set_tags({"coreg.stage": "export", "source_model": model})
            parity = folder / f"{ONNX_NAME}.parity.json"
            if parity.exists():
                rep = json.loads(parity.read_text())
                tracker.log_metrics({f"export_parity_{k}": float(v) for k, v in rep.items()
                                     if isinstance(v, (int, float)) and not isinstance(v, bool)})
            tracker.log_metrics({"export_onnx_size_bytes": float(out.stat().st_size)})
            tracker.log_artifact(folder, artifact_path="onnx")
            if register_name:
                import mlflow.onnx
                import onnx

                info = mlflow.onnx.log_model(onnx.load(str(out)), name="onnx_model",
                                             registered_model_name=register_name, save_as_external_data=False)
                tracker.set_tags({"onnx_model_uri": info.model_uri})
    outputs = {"onnx": f"runs:/{run_id}/onnx", "onnx_file": ONNX_NAME}
    if register_name:
        outputs["onnx_registered_name"] = register_name
    finish_step(run_id, outputs)
    return outputs


@click.command(ENTRY)
@click.option("--model", required=True, help="Student: models:/NAME/VERSION, a run id or a student.pt path.")
@click.option("--single", type=click.IntRange(0, 1), default=0, show_default=True,
              help="1: export the first network alone instead of the ensemble.")
@click.option("--int8", type=click.IntRange(0, 1), default=0, show_default=True,
              help="1: also write a static-quantized student.int8.onnx.")
@click.option("--register-name", default="", help="Also register the ONNX model under this name.")
@click.option("--data-dir", default="", help="Root of torchvision datasets (parity images).")
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Export a student to ONNX (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
