"""Entry point ``train``: one student trained on an annotation (Co-Reg or a baseline).

``python -m pipelines.train --data digits --annotations runs:/<id>/annotation/annotation.npz``
(or ``mlflow run . -e train``). Outputs: ``student`` = ``runs:/<run>/student.pt`` and
``model_uri`` (the student as an MLflow pyfunc model, which ``register`` promotes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pipelines._common import (
    data_params,
    fetch,
    finish_step,
    load_bundle,
    run_options,
    split_overrides,
    step_main,
    step_tracker,
)

ENTRY = "train"


def run(*, run_id: str, data: str, annotations: str, method: str = "coreg", epochs: int = 30, warmup: int = 10,
        overrides: str = "", seed: int = 0, device: str = "auto", split_seed: int = 0, data_dir: str = "",
        download: int = 0) -> dict[str, str]:
    """Train on ``annotations`` (a path or artifact URI) inside run ``run_id``.

    Args:
        overrides: config overrides as shell words, e.g. ``"model.width=0.25 method.batch_size=64"``.
    """
    from coreg._cli.train import build_train_config, train_tracked
    from coreg.data import load_annotation_for

    cfg = build_train_config(method, overrides=split_overrides(overrides), epochs=epochs, warmup=warmup, seed=seed,
                             device=device)
    bundle = load_bundle(data, data_dir=data_dir, download=download, split_seed=split_seed)
    with tempfile.TemporaryDirectory(prefix="coreg-train-") as tmp:
        ann = load_annotation_for(fetch(annotations, Path(tmp) / "in"), bundle)
        with step_tracker(run_id) as tracker:
            result = train_tracked(bundle=bundle, annotation=ann, annotation_path=annotations, cfg=cfg,
                                   out_dir=Path(tmp) / "run", tracker=tracker, progress=False, log_checkpoint=False)
    outputs = {"student": f"runs:/{run_id}/student.pt", "model_uri": str(result.extras.get("model_uri") or ""),
               **{k: f"{v:.6g}" for k, v in result.metrics.items()
                  if k in ("test_acc", "val_approx_acc", "val_covering_rate")}}
    finish_step(run_id, outputs)
    return outputs


@click.command(ENTRY)
@data_params
@click.option("--annotations", required=True, help="Annotation file or artifact URI (runs:/...).")
@click.option("--method", default="coreg", show_default=True, help="Training method (see `coreg methods`).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--warmup", type=int, default=10, show_default=True)
@click.option("--overrides", default="", help='Config overrides, e.g. "model.width=0.25 method.batch_size=64".')
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Train a student (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
