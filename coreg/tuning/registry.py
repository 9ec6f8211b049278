"""Promote the best trained student of an experiment (or of one study) to the MLflow Model Registry.

:func:`register_best` ranks the FINISHED runs that logged a student model (tag
``student_model_uri``, written by :func:`coreg.tracking.student_model.log_student_model`) by one
metric's last logged value (e.g. ``final_val_approx_acc``; ``--study`` restricts the ranking to
that study's trial runs, tags ``coreg.study`` and ``coreg.role=trial``), registers the winner's
model under a name and points the alias ``champion`` at it; the runner-up, if any, gets
``challenger``. A run's model is registered once: re-running reuses its version. Each version is
tagged with the run's ``data_fingerprint`` and ``annotation_source`` and with its final metrics,
so ``mlflow.pyfunc.load_model("models:/NAME@champion")`` always says what it was trained on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from coreg.errors import CoregError
from coreg.tuning.study import REGISTER_METRIC_ATTR, ROLE_TAG, STUDY_TAG, read_study_attrs, redact_url

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
MODEL_URI_TAG = "student_model_uri"
DESCRIPTION = ("coreg student classifier (pyfunc: uint8 images [B, H, W, C] -> class indices, or probabilities "
               "with params={'output': 'probs'})")


@dataclass(frozen=True)
class Registration:
    """A registered student: ``uri`` is ``models:/NAME/VERSION``, ``alias_uri`` ``models:/NAME@champion``."""

    name: str
    version: str
    uri: str
    alias_uri: str
    run_id: str
    metric: str
    value: float
    challenger_version: str | None = None
    challenger_run_id: str | None = None


def resolve_target(*, study: str | None, storage: str, experiment: str | None,
                   metric: str | None) -> tuple[str, str]:
    """The MLflow experiment and ranking metric of a registration: given ones win, else the study's.

    ``coreg tune`` stores both on the study (user attributes ``experiment`` and
    ``register_metric``), so ``coreg register --study S --name N`` needs neither flag.

    Raises:
        CoregError: a value is neither given nor recorded by the study.
    """
    if experiment and metric:
        return experiment, metric
    if not study:
        raise CoregError("give --study S (a coreg tune study, which records its experiment and metric), or both "
                         "--experiment and --metric")
    attrs = read_study_attrs(storage, study)
    missing = [flag for flag, value in (("--experiment", experiment), ("--metric", metric)) if not value]
    if attrs is None:
        raise CoregError(f"study {study!r} is not in Optuna storage {redact_url(storage)}: pass the --storage that "
                         f"coreg tune used, or {' and '.join(missing)}")
    experiment = experiment or attrs.get("experiment")
    metric = metric or attrs.get(REGISTER_METRIC_ATTR)
    if not experiment:
        raise CoregError(f"study {study!r} does not record its MLflow experiment (made by an older coreg tune): "
                         "pass --experiment")
    if not metric:
        why = ("it has no completed trial yet" if attrs.get("metric", "auto") == "auto"
               else "made by an older coreg tune")
        raise CoregError(f"study {study!r} does not record its selection metric ({why}): pass --metric, "
                         "e.g. final_val_approx_acc")
    return experiment, metric


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def candidate_runs(*, experiment: str, study: str | None = None, client: Any = None) -> list[Any]:
    """FINISHED, active runs of ``experiment`` that logged a student model (optionally one study's trials).

    Raises:
        CoregError: the experiment does not exist.
    """
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise CoregError(f"MLflow experiment {experiment!r} does not exist (tracking URI "
                         f"{client.tracking_uri})")
    filt = "attributes.status = 'FINISHED'"
    if study:
        filt += f" and tags.`{STUDY_TAG}` = '{_q(study)}' and tags.`{ROLE_TAG}` = 'trial'"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=filt, run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    return [r for r in runs if r.data.tags.get(MODEL_URI_TAG)]


def rank_runs(runs: list[Any], *, metric: str, mode: str = "max") -> list[tuple[Any, float]]:
    """``(run, value)`` best first by the last logged value of ``metric``; runs without it are left out.

    Ties go to the earlier run.

    Raises:
        CoregError: ``mode`` is not max/min, or no run has a finite value of ``metric``.
    """
    if mode not in ("max", "min"):
        raise CoregError(f"--mode must be max or min, got {mode!r}")
    scored = [(r, float(r.data.metrics[metric])) for r in runs
              if metric in r.data.metrics and math.isfinite(float(r.data.metrics[metric]))]
    if not scored:
        known = sorted({k for r in runs for k in r.data.metrics})
        raise CoregError(f"no finished run with a student model logged metric {metric!r}"
                         + (f"; logged metrics: {', '.join(known)}" if known else ""))
    sign = -1.0 if mode == "max" else 1.0
    return sorted(scored, key=lambda rv: (sign * rv[1], rv[0].info.start_time, rv[0].info.run_id))


def _version_for(client: Any, name: str, run: Any, *, metric: str, value: float, experiment: str,
                 study: str | None) -> Any:
    """The registered version of ``run``'s student under ``name`` (created once, then reused)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    run_id = run.info.run_id
    for mv in client.search_model_versions(f"name = '{_q(name)}'"):
        if mv.run_id == run_id or mv.tags.get("source_run_id") == run_id:
            return mv
    uri = run.data.tags[MODEL_URI_TAG]
    try:
        mv = mlflow.register_model(uri, name)
    except MlflowException as e:
        raise CoregError(f"cannot register {uri} of run {run_id}: {str(e).splitlines()[0]}") from None
    if not client.get_registered_model(name).description:
        client.update_registered_model(name, description=DESCRIPTION)
    tags = {"source_run_id": run_id, "source_experiment": experiment, "selection_metric": metric,
            "selection_value": f"{value:.6g}", "data_fingerprint": run.data.tags.get("data_fingerprint", ""),
            "annotation_source": run.data.tags.get("annotation_source", ""),
            "data": run.data.tags.get("data", ""), "method": run.data.tags.get("coreg.method", "")}
    if study:
        tags[STUDY_TAG] = study
    for key, val in run.data.metrics.items():
        if key.startswith("final_") or key in ("selected_epoch", "objective", metric):
            tags[f"metric.{key}"] = f"{val:.6g}"
    for key, val in tags.items():
        client.set_model_version_tag(name, mv.version, key, str(val))
    return mv


def register_best(*, experiment: str, metric: str, name: str, study: str | None = None, mode: str = "max",
                  client: Any = None) -> Registration:
    """Register the best run's student under ``name``; alias ``champion`` (and ``challenger``).

    Args:
        experiment: MLflow experiment to search.
        metric: metric to rank by (its last logged value), e.g. ``final_val_approx_acc``.
        name: registered model name.
        study: only this study's trial runs (tag ``coreg.study``).
        mode: ``max`` or ``min``.
        client: an ``MlflowClient`` (default: one for the current tracking URI).

    Returns:
        The champion's registration (with the challenger's version if there is a runner-up).

    Raises:
        CoregError: no experiment, no candidate run, metric never logged, registration failure.
    """
    from mlflow.tracking import MlflowClient

    from coreg.tracking.mlflow import setup_mlflow

    if not name.strip():
        raise CoregError("--name must not be empty")
    setup_mlflow()
    client = client or MlflowClient()
    runs = candidate_runs(experiment=experiment, study=study, client=client)
    if not runs:
        where = f"study {study!r} of experiment {experiment!r}" if study else f"experiment {experiment!r}"
        raise CoregError(f"no finished run with a logged student model in {where}")
    ranked = rank_runs(runs, metric=metric, mode=mode)
    best_run, best_value = ranked[0]
    best = _version_for(client, name, best_run, metric=metric, value=best_value, experiment=experiment, study=study)
    client.set_registered_model_alias(name, CHAMPION, best.version)
    challenger = None
    if len(ranked) > 1:
        run2, value2 = ranked[1]
        challenger = _version_for(client, name, run2, metric=metric, value=value2, experiment=experiment,
                                  study=study)
        client.set_registered_model_alias(name, CHALLENGER, challenger.version)
    else:
        from mlflow.exceptions import MlflowException

        try:  # a runner-up from an earlier registration is no longer one
            client.delete_registered_model_alias(name, CHALLENGER)
        except MlflowException as e:
            logger.debug("no challenger alias to remove: %s", e)
    logger.info("registered %s version %s (run %s, %s=%.4f)", name, best.version, best_run.info.run_id, metric,
                best_value)
    return Registration(name=name, version=str(best.version), uri=f"models:/{name}/{best.version}",
                        alias_uri=f"models:/{name}@{CHAMPION}", run_id=best_run.info.run_id, metric=metric,
                        value=best_value, challenger_version=str(challenger.version) if challenger else None,
                        challenger_run_id=ranked[1][0].info.run_id if challenger else None)
