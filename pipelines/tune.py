"""Entry point ``tune``: an Optuna study (``coreg tune``) whose trials nest under this step's run.

``python -m pipelines.tune --data digits --annotations runs:/<id>/annotation/annotation.npz
--n-trials 20`` (or ``mlflow run . -e tune``). The step run becomes the study's MLflow parent run
(tags ``coreg.study``/``coreg.role=study``, which ``coreg tune`` looks up), so every trial is a
child run of it. Outputs: ``best_overrides`` (the best trial's hyper-parameters as ``--set``
words, which :mod:`pipelines.main` passes to the final ``train``), ``study``, ``best_value``,
``best_run``.

Several workers: run the same step (same ``--storage`` and ``--study-name``) on many machines;
see docs/pipeline.md.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import click

from pipelines._common import (
    data_params,
    experiment_name_of,
    fetch,
    finish_step,
    join_overrides,
    mlflow_client,
    run_coreg,
    run_options,
    split_overrides,
    step_main,
    step_tracker,
)

ENTRY = "tune"


def best_overrides(*, storage: str, study_name: str, method: str) -> tuple[list[str], Any]:
    """The best COMPLETE trial of a study and its hyper-parameters as ``key=value`` overrides.

    Raises:
        CoregError: the study has no completed trial.
    """
    import optuna
    from optuna.trial import FixedTrial, TrialState

    from coreg.errors import CoregError
    from coreg.tuning.spaces import suggest

    study = optuna.load_study(study_name=study_name, storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise CoregError(f"study {study_name} has no completed trial (all failed or pruned?)")
    best = max(complete, key=lambda t: (t.value, -t.number))
    return suggest(method, FixedTrial(dict(best.params), number=best.number)), best


def run(*, run_id: str, data: str, annotations: str, method: str = "coreg", n_trials: int = 20, epochs: int = 10,
        warmup: int = 3, overrides: str = "", seed: int = 0, storage: str = "", study_name: str = "",
        metric: str = "auto", pruner: str = "median", device: str = "auto", split_seed: int = 0,
        data_dir: str = "", download: int = 0) -> dict[str, str]:
    """Run (or join) a study inside run ``run_id`` and return the best trial's overrides.

    Args:
        storage: Optuna storage URL; empty = a sqlite file in a temporary folder (one process).
        study_name: empty = ``<data>-<method>-<run id prefix>``.
    """
    from coreg.tuning.study import ROLE_TAG, STUDY_TAG

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", data.replace("folder:", "")).strip("_")[-40:] or "data"
    name = study_name or f"{safe}-{method}-{run_id[:8]}"
    experiment = experiment_name_of(run_id)
    client = mlflow_client()
    # This run is the study's parent: `coreg tune` finds it by these tags and nests the trials.
    client.set_tag(run_id, STUDY_TAG, name)
    client.set_tag(run_id, ROLE_TAG, "study")
    client.set_tag(run_id, "coreg.stage", "tune")
    with tempfile.TemporaryDirectory(prefix="coreg-tune-") as tmp:
        url = storage or f"sqlite:///{Path(tmp) / 'optuna.db'}"
        ann = fetch(annotations, Path(tmp) / "in")
        args = ["tune", "--data", data, "--split-seed", str(split_seed), "--annotations", str(ann),
                "--method", method, "--n-trials", str(n_trials), "--storage", url, "--study-name", name,
                "--epochs", str(epochs), "--warmup", str(warmup), "--seed", str(seed), "--device", device,
                "--experiment", experiment, "--metric", metric, "--pruner", pruner, "--out", str(Path(tmp) / "trials")]
        if data_dir:
            args += ["--data-dir", data_dir]
        if download:
            args += ["--download"]
        for o in split_overrides(overrides):
            args += ["--set", o]
        run_coreg(args)
        best, trial = best_overrides(storage=url, study_name=name, method=method)
    with step_tracker(run_id) as tracker:
        tracker.log_text("\n".join(best) + "\n", "best_overrides.txt")
    outputs = {"best_overrides": join_overrides(best), "study": name, "best_value": f"{trial.value:.6g}",
               "best_trial": str(trial.number), "best_run": str(trial.user_attrs.get("mlflow_run_id", ""))}
    finish_step(run_id, outputs)
    return outputs


@click.command(ENTRY)
@data_params
@click.option("--annotations", required=True, help="Annotation file or artifact URI (runs:/...).")
@click.option("--method", default="coreg", show_default=True, help="Training method (see `coreg methods`).")
@click.option("--n-trials", type=int, default=20, show_default=True, help="Size the study should reach.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs per trial.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Warm-up epochs per trial (never pruned).")
@click.option("--overrides", default="", help='Values fixed in every trial, e.g. "model.width=0.25".')
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--storage", default="", help="Optuna storage URL shared by workers (default: a private sqlite file).")
@click.option("--study-name", default="", help="Study name (default <data>-<method>-<run id prefix>).")
@click.option("--metric", type=click.Choice(["auto", "val_approx_acc", "val_covering_rate", "val_acc"]),
              default="auto", show_default=True, help="Label-free selection metric to maximise.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Tune hyper-parameters with Optuna (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
