"""The offline demo (``make demo`` / ``python -m pipelines.demo``): the whole pipeline on digits.

Weak few-shot "instance" annotators label scikit-learn's embedded digits -> a 2-trial Optuna study
-> the final Co-Reg student (width 0.25) -> registered as ``coreg-demo-student`` (alias
champion) -> ONNX -> one prediction through the torch-free ``coreg-serve`` console script.
Everything goes to ``outputs/demo/`` (MLflow store ``sqlite:///outputs/demo/mlflow.db`` unless
``MLFLOW_TRACKING_URI`` is set). Re-running reuses the finished steps and takes seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

OUT = Path("outputs/demo")
# A fixed warm-up (warmup_patience=0) of 16 epochs: the study tunes co-training parameters
# (lambda_u, T, the division threshold, loss weights) in 8-epoch trials, which must hand over to
# co-training at a known epoch for those parameters to matter; the adaptive default would keep
# such short trials in warm-up (it needs 10 epochs left to switch). Warm-up epochs are also about
# 8x cheaper than co-training epochs.
SETTINGS: dict[str, Any] = {
    "data": "digits", "annotator": "instance", "shots": 2, "annotators": 3, "method": "coreg",
    "n_trials": 2, "trial_epochs": 8, "trial_warmup": 5, "epochs": 24, "warmup": 16,
    "overrides": "model.width=0.25 method.batch_size=64 warmup_patience=0", "seed": 0, "model_name": "coreg-demo-student",
}


def save_test_digit(path: Path, *, index: int = 0) -> tuple[Path, str]:
    """Write digits test image ``index`` as a PNG; returns the path and its gold class."""
    from PIL import Image

    from coreg.data import load_dataset

    bundle = load_dataset("digits")
    split = bundle.test if bundle.test is not None else bundle.train
    img = split.images[index]
    img = img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    gold = bundle.classes[int(split.labels[index])] if split.labels is not None else "?"
    return path, gold


def serve_predict(onnx_path: Path, image: Path) -> dict[str, Any]:
    """Run ``coreg-serve predict --json`` in a subprocess (the torch-free runner) and parse its output."""
    exe = shutil.which("coreg-serve", path=str(Path(sys.executable).parent)) or shutil.which("coreg-serve")
    cmd = [exe] if exe else [sys.executable, "-m", "serving.runner"]
    proc = subprocess.run([*cmd, "predict", "--model", str(onnx_path), str(image), "--json"], capture_output=True,
                          text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise click.ClickException(f"coreg-serve failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return json.loads(proc.stdout)


def _short_overrides(text: str) -> str:
    """``"lr=0.0219879 method.T=0.303277"`` -> ``"lr=0.022, T=0.303"`` for the summary."""
    from pipelines._common import split_overrides

    parts = []
    for item in split_overrides(text):
        key, value = item.split("=", 1)
        try:
            value = f"{float(value):.3g}"
        except ValueError:
            pass
        parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    return ", ".join(parts)


def _first_prediction(doc: dict[str, Any]) -> str:
    """``"7 (p=0.912)"`` from ``coreg-serve predict --json`` output."""
    top = doc["predictions"][0]["top_k"][0]
    return f"{top['class']} (p={float(top['score']):.3f})"


@click.command("demo")
@click.option("--out-dir", default=str(OUT), show_default=True, help="Demo outputs (and default MLflow store).")
@click.option("--runner", type=click.Choice(["in-process", "mlflow"]), default="in-process", show_default=True,
              help="in-process (fast) or one `mlflow run` process per step.")
def cli(out_dir: str, runner: str) -> None:
    """Run the offline end-to-end demo and print a summary."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out.resolve() / 'mlflow.db'}")
    from mlflow.exceptions import MlflowException

    from coreg.cli import setup_logging
    from coreg.errors import CoregError
    from pipelines.main import run_pipeline, where_to_look

    setup_logging(False)
    t0 = time.monotonic()
    try:
        result = run_pipeline(**SETTINGS, runner=runner, out_dir=out, experiment="coreg-demo",
                              storage=f"sqlite:///{out.resolve() / 'optuna.db'}",
                              main_params={**SETTINGS, "runner": runner, "out_dir": str(out)})
        image, gold = save_test_digit(out / "digit.png")
        pred = serve_predict(result.onnx_path, image)
    except (CoregError, MlflowException) as e:
        click.echo(f"Error: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}", err=True)
        sys.exit(2)
    ann = result.steps[0].outputs
    train = result.step("train").outputs
    name, version = result.registered
    reused = sum(s.reused for s in result.steps)
    click.echo("")
    click.echo("=" * 72)
    click.echo(f"coreg demo: digits, instance-dependent annotators, {SETTINGS['n_trials']}-trial study, "
               f"{time.monotonic() - t0:.0f} s ({reused}/{len(result.steps)} steps reused)")
    click.echo(f"annotator accuracy (single label, train split): {float(ann.get('single_label_acc', 'nan')):.4f}  "
               f"(eta {float(ann.get('eta', 'nan')):.4f}, avg set size {float(ann.get('avg_set_size', 'nan')):.3f})")
    click.echo(f"student test accuracy:                          {float(train.get('test_acc', 'nan')):.4f}")
    if "tune" in {s.entry_point for s in result.steps}:
        tune = result.step("tune").outputs
        click.echo(f"best trial {tune.get('best_trial')} (val_approx_acc {float(tune.get('best_value', 'nan')):.4f}): "
                   f"{_short_overrides(tune.get('best_overrides', ''))}")
    click.echo(f"registered model: {name} version {version} (models:/{name}@champion)")
    click.echo(f"ONNX: {result.onnx_path}")
    click.echo(f"coreg-serve predict {image} (gold {gold}): {_first_prediction(pred)}")
    click.echo("-" * 72)
    click.echo(where_to_look(result))


if __name__ == "__main__":  # pragma: no cover
    cli()
