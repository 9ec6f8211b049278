"""``coreg register``: the best run's student -> MLflow Model Registry (aliases champion/challenger)."""

from __future__ import annotations

import click

from coreg._cli._common import handle_errors


@click.command("register")
@click.option("--study", default=None,
              help="Only the trial runs of this tuning study (tag coreg.study); it also supplies --experiment and "
                   "--metric.")
@click.option("--storage", default="sqlite:///optuna.db", show_default=True,
              help="Optuna storage of --study (the one coreg tune used).")
@click.option("--experiment", default=None, help="MLflow experiment holding the runs (default: the study's).")
@click.option("--metric", default=None,
              help="Metric to rank runs by (its last logged value), e.g. final_val_approx_acc or final_val_acc "
                   "(default: the study's selection metric).")
@click.option("--name", required=True, help="Registered model name.")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@handle_errors
def register_cmd(study: str | None, storage: str, experiment: str | None, metric: str | None, name: str,
                 mode: str) -> None:
    """Register the best run's student in the MLflow Model Registry (alias champion, runner-up challenger)."""
    from coreg.tuning.registry import register_best, resolve_target

    experiment, metric = resolve_target(study=study, storage=storage, experiment=experiment, metric=metric)
    reg = register_best(experiment=experiment, metric=metric, name=name, study=study, mode=mode)
    click.echo(f"registered {reg.name} version {reg.version} from run {reg.run_id} ({reg.metric} = {reg.value:.4f})")
    click.echo(f"alias champion -> version {reg.version}: {reg.alias_uri}")
    if reg.challenger_version:
        click.echo(f"alias challenger -> version {reg.challenger_version} (run {reg.challenger_run_id}): "
                   f"models:/{reg.name}@challenger")
    click.echo(f"model URI: {reg.uri}")
    click.echo(f"load it: mlflow.pyfunc.load_model({reg.alias_uri!r}).predict(uint8 images [B, H, W, C])")
