"""``coreg register``: the best run's student -> MLflow Model Registry (aliases champion/challenger)."""

from __future__ import annotations

import click

from coreg._cli._common import handle_errors


@click.command("register")
@click.option("--experiment", required=True, help="MLflow experiment holding the training runs.")
@click.option("--study", default=None, help="Only the trial runs of this tuning study (tag coreg.study).")
@click.option("--metric", required=True,
              help="Metric to rank runs by (its last logged value), e.g. final_val_approx_acc or final_val_acc.")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@handle_errors
def register_cmd(experiment: str, study: str | None, metric: str, name: str, mode: str) -> None:
    """Register the best run's student in the MLflow Model Registry (alias champion, runner-up challenger)."""
    from coreg.tuning.registry import register_best

    reg = register_best(experiment=experiment, metric=metric, name=name, study=study, mode=mode)
    click.echo(f"registered {reg.name} version {reg.version} from run {reg.run_id} ({reg.metric} = {reg.value:.4f})")
    click.echo(f"alias champion -> version {reg.version}: {reg.alias_uri}")
    if reg.challenger_version:
        click.echo(f"alias challenger -> version {reg.challenger_version} (run {reg.challenger_run_id}): "
                   f"models:/{reg.name}@challenger")
    click.echo(f"model URI: {reg.uri}")
    click.echo(f"load it: mlflow.pyfunc.load_model({reg.alias_uri!r}).predict(uint8 images [B, H, W, C])")
