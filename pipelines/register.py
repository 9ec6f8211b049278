"""Entry point ``register``: promote a student to the MLflow Model Registry (alias ``champion``).

Two sources:

* ``--source RUN`` (a run id or ``runs:/RUN``): that training run's student model (the pipeline
  registers its final ``train`` run this way);
* ``--study NAME``: the best trial run of a tuning study by ``--metric``, exactly as
  ``coreg register --experiment E --study NAME --metric M --name N`` (champion and challenger).

A run's model is registered once; re-registering reuses its version. Outputs:
``registered_name``, ``version``, ``model_uri`` (``models:/NAME/VERSION``), ``alias_uri``.
"""

from __future__ import annotations

import re

import click

from pipelines._common import (
    experiment_name_of,
    finish_step,
    mlflow_client,
    run_options,
    step_main,
    step_tracker,
)

ENTRY = "register"
MODEL_URI_TAG = "student_model_uri"
CHAMPION = "champion"


def _source_run_id(source: str) -> str:
    from coreg.errors import CoregError

    m = re.match(r"^(?:runs:/)?([0-9a-f]{32})(?:/.*)?$", source.strip())
    if not m:
        raise CoregError(f"--source must be a run id or runs:/<run id>, got {source!r}")
    return m.group(1)


def register_run(*, source_run_id: str, name: str, alias: str = CHAMPION) -> tuple[str, str]:
    """Register the student model of ``source_run_id`` under ``name`` and point ``alias`` at it.

    Returns:
        ``(version, model_uri)``.

    Raises:
        CoregError: the run logged no student model, or the registry refused it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from coreg.errors import CoregError

    client = mlflow_client()
    run = client.get_run(source_run_id)
    uri = run.data.tags.get(MODEL_URI_TAG)
    if not uri:
        raise CoregError(f"run {source_run_id} logged no student model (tag {MODEL_URI_TAG})")
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="coreg student classifier (pyfunc: uint8 images "
                                                          "[B, H, W, C] -> class indices)")
    version = None
    for mv in client.search_model_versions(f"name = '{name}'"):
        if mv.run_id == source_run_id or mv.tags.get("source_run_id") == source_run_id:
            version = str(mv.version)
            break
    if version is None:
        try:
            mv = mlflow.register_model(uri, name)
        except MlflowException as e:
            raise CoregError(f"cannot register {uri}: {str(e).splitlines()[0]}") from None
        version = str(mv.version)
        tags = {"source_run_id": source_run_id, "data_fingerprint": run.data.tags.get("data_fingerprint", ""),
                "annotation_source": run.data.tags.get("annotation_source", ""),
                "data": run.data.tags.get("data", ""), "method": run.data.tags.get("coreg.method", "")}
        tags.update({f"metric.{k}": f"{v:.6g}" for k, v in run.data.metrics.items() if k.startswith("final_")})
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, str(v))
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return version, f"models:/{name}/{version}"


def run(*, run_id: str, name: str = "coreg-student", source: str = "", study: str = "", study_experiment: str = "",
        metric: str = "final_val_approx_acc", alias: str = CHAMPION) -> dict[str, str]:
    """Register ``source``'s student (or the best trial of ``study``) and record it in run ``run_id``."""
    from coreg.errors import CoregError

    if bool(source) == bool(study):
        raise CoregError("give exactly one of --source RUN and --study NAME")
    if study:
        from coreg.tuning.registry import register_best

        reg = register_best(experiment=study_experiment or experiment_name_of(run_id), metric=metric, name=name,
                            study=study)
        version, uri, src = reg.version, reg.uri, reg.run_id
    else:
        src = _source_run_id(source)
        version, uri = register_run(source_run_id=src, name=name, alias=alias)
    with step_tracker(run_id) as tracker:
        tracker.set_tags({"coreg.stage": "register", "registered_model": uri, "source_run_id": src})
    outputs = {"registered_name": name, "version": version, "model_uri": uri,
               "alias_uri": f"models:/{name}@{alias or CHAMPION}", "source_run": src}
    finish_step(run_id, outputs)
    return outputs


@click.command(ENTRY)
@click.option("--name", default="coreg-student", show_default=True, help="Registered model name.")
@click.option("--source", default="", help="Training run (id or runs:/ID) whose student to register.")
@click.option("--study", default="", help="Instead: the best trial run of this tuning study.")
@click.option("--study-experiment", default="",
              help="--study: experiment of the trial runs (default this run's).")
@click.option("--metric", default="final_val_approx_acc", show_default=True, help="--study: ranking metric.")
@click.option("--alias", default=CHAMPION, show_default=True, help="Alias set on the version (--source).")
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Register a student in the MLflow Model Registry (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
