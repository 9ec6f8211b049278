"""Entry point ``main``: annotate -> tune -> train -> register -> export, reusing finished steps.

The chain (each step is an MLproject entry point with its own MLflow run, a child of this one):

1. candidate labels: ``annotate`` (``--annotator clip``), ``simulate`` (``flip``/``instance``) or
   ``import`` (``--annotator import --jsonl F``);
2. ``tune`` (an Optuna study of ``--n-trials`` trials of ``--trial-epochs`` epochs; skipped with
   ``--n-trials 0``);
3. ``train``: the final student, ``--epochs`` epochs with the best trial's hyper-parameters (your
   ``--overrides`` win over them);
4. ``register``: that student in the Model Registry under ``--model-name`` (alias ``champion``);
5. ``export``: the registered version to ONNX, downloaded to ``<out-dir>/onnx/student.onnx``.

Steps pass outputs on as artifact URIs (``runs:/...``) read from the ``coreg.out.*`` tags of the
previous step's run. A step whose entry point, parameters and code version (git commit, or a
hash of the sources outside git) match a FINISHED, complete run of the experiment is not run
again: its run is reused (MLflow's ``examples/multistep_workflow``).

Two runners: ``--runner mlflow`` (default) launches each step with ``mlflow.projects.run(...,
env_manager="local")``, a process per step; ``--runner in-process`` (``--in-process``) calls the
step functions directly in child runs made here: faster, same runs, tags and reuse.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from coreg.errors import CoregError
from pipelines._common import (
    CODE_TAG,
    COMPLETE_TAG,
    DEFAULT_EXPERIMENT,
    ENTRY_TAG,
    PROJECT_ROOT,
    code_version,
    create_step_run,
    experiment_id,
    fetch,
    finish_step,
    join_overrides,
    mlflow_client,
    param_equal,
    run_outputs,
    split_overrides,
    tag_step_run,
)

logger = logging.getLogger("coreg.pipelines")

ENTRY = "main"
STEP_MODULES = {"simulate": "pipelines.simulate", "annotate": "pipelines.annotate", "import": "pipelines.import_labels",
                "train": "pipelines.train", "tune": "pipelines.tune", "register": "pipelines.register",
                "export": "pipelines.export"}
ANNOTATORS = ("instance", "flip", "clip", "import")
RUNNERS = ("mlflow", "in-process")


def entry_point_specs(project_dir: Path = PROJECT_ROOT) -> dict[str, dict[str, dict[str, Any]]]:
    """``{entry point: {param: {"type": ..., "default": ...}}}`` from the ``MLproject`` file."""
    import yaml

    spec = yaml.safe_load((project_dir / "MLproject").read_text())
    return {name: {k: (v if isinstance(v, dict) else {"type": v}) for k, v in (ep.get("parameters") or {}).items()}
            for name, ep in spec["entry_points"].items()}


def _typed(value: str, kind: str) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    return value


@dataclass
class StepRecord:
    """One step of a pipeline run: its run id, whether it was reused, its outputs and wall time."""

    entry_point: str
    run_id: str
    reused: bool
    outputs: dict[str, str]
    seconds: float


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did, for summaries and tests."""

    main_run_id: str
    experiment_id: str
    tracking_uri: str
    steps: list[StepRecord] = field(default_factory=list)
    onnx_path: Path | None = None

    def step(self, entry_point: str) -> StepRecord:
        """The record of ``entry_point`` (the annotation step is under its own entry point name)."""
        for s in self.steps:
            if s.entry_point == entry_point:
                return s
        raise KeyError(entry_point)

    @property
    def registered(self) -> tuple[str, str]:
        """``(registered model name, version)``."""
        out = self.step("register").outputs
        return out["registered_name"], out["version"]


class StepRunner:
    """Runs (or reuses) entry points in one experiment, as children of the ``main`` run."""

    def __init__(self, *, experiment_id: str, parent_run_id: str, in_process: bool) -> None:
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.in_process = in_process
        self.specs = entry_point_specs()

    def full_params(self, entry_point: str, params: dict[str, Any]) -> dict[str, str]:
        """All declared parameters of ``entry_point`` as strings (defaults filled in), like ``mlflow run``."""
        spec = self.specs[entry_point]
        unknown = set(params) - set(spec)
        if unknown:
            raise CoregError(f"entry point {entry_point} has no parameter(s) {', '.join(sorted(unknown))}")
        out = {}
        for k, s in spec.items():
            v = params.get(k, s.get("default"))
            if v is None:
                raise CoregError(f"entry point {entry_point} needs parameter {k}")
            out[k] = str(v)
        return out

    def find_finished(self, entry_point: str, params: dict[str, str]) -> Any | None:
        """The newest FINISHED, complete run of ``entry_point`` with these parameters and this code version."""
        filt = (f"tags.`{ENTRY_TAG}` = '{entry_point}' and tags.`{CODE_TAG}` = '{code_version()}' "
                f"and tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED'")
        runs = mlflow_client().search_runs([self.experiment_id], filter_string=filt, max_results=200,
                                           order_by=["attributes.start_time DESC"])
        for run in runs:
            if all(param_equal(run.data.params.get(k), v) for k, v in params.items()):
                return run
        return None

    def step(self, entry_point: str, params: dict[str, Any]) -> StepRecord:
        """Reuse a finished run of ``entry_point`` with ``params``, or run it now."""
        full = self.full_params(entry_point, params)
        t0 = time.monotonic()
        found = self.find_finished(entry_point, full)
        if found is not None:
            rec = StepRecord(entry_point, found.info.run_id, True, run_outputs(found), time.monotonic() - t0)
            click.echo(f"[{entry_point}] reusing finished run {rec.run_id}")
            return rec
        click.echo(f"[{entry_point}] running ({'in-process' if self.in_process else 'mlflow run'})")
        run_id = self._run_in_process(entry_point, full) if self.in_process else self._run_project(entry_point, full)
        run = mlflow_client().get_run(run_id)
        if run.info.status != "FINISHED" or run.data.tags.get(COMPLETE_TAG) != "true":
            raise CoregError(f"step {entry_point} (run {run_id}) did not finish (status {run.info.status})")
        rec = StepRecord(entry_point, run_id, False, run_outputs(run), time.monotonic() - t0)
        click.echo(f"[{entry_point}] run {run_id} finished in {rec.seconds:.1f} s")
        return rec

    def _run_in_process(self, entry_point: str, full: dict[str, str]) -> str:
        import importlib

        module = importlib.import_module(STEP_MODULES[entry_point])
        kwargs = {k: _typed(v, self.specs[entry_point][k].get("type", "string")) for k, v in full.items()}
        run_id = create_step_run(entry_point, experiment_id=self.experiment_id, params=full,
                                 parent_run_id=self.parent_run_id)
        client = mlflow_client()
        try:
            module.run(run_id=run_id, **kwargs)
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
        return run_id

    def _run_project(self, entry_point: str, full: dict[str, str]) -> str:
        import mlflow
        from mlflow.exceptions import ExecutionException

        try:
            submitted = mlflow.projects.run(uri=str(PROJECT_ROOT), entry_point=entry_point, parameters=full,
                                            experiment_id=self.experiment_id, env_manager="local",
                                            synchronous=True)
        except ExecutionException as e:
            raise CoregError(f"step {entry_point} failed: {str(e).splitlines()[0]}") from None
        return submitted.run_id


def annotation_step(annotator: str, *, data: str, jsonl: str, clip_model: str, pretrained: str, templates: str,
                    mode: str, q: float, eta: float, shots: int, annotators: int, seed: int,
                    common: dict[str, Any], device: str) -> tuple[str, dict[str, Any]]:
    """Entry point and parameters of the candidate-label step for ``annotator``."""
    if annotator in ("flip", "instance"):
        return "simulate", {"data": data, "kind": annotator, "q": q, "eta": eta, "shots": shots,
                            "annotators": annotators, "seed": seed, **common}
    if annotator == "clip":
        return "annotate", {"data": data, "model": clip_model, "pretrained": pretrained, "templates": templates,
                            "mode": mode, "device": device, "seed": seed, **common}
    if annotator == "import":
        if not jsonl:
            raise CoregError("--annotator import needs --jsonl FILE")
        return "import", {"data": data, "jsonl": str(Path(jsonl).resolve()) if Path(jsonl).exists() else jsonl,
                          **common}
    raise CoregError(f"unknown annotator {annotator!r}; valid: {', '.join(ANNOTATORS)}")


def run_pipeline(*, data: str = "digits", annotator: str = "instance", jsonl: str = "", clip_model: str = "ViT-B-32",
                 pretrained: str = "openai", templates: str = "paper", mode: str = "multi_prompt", q: float = 0.1,
                 eta: float = 0.2, shots: int = 2, annotators: int = 3, method: str = "coreg", n_trials: int = 3,
                 trial_epochs: int = 8, trial_warmup: int = 4, epochs: int = 30, warmup: int = 10,
                 overrides: str = "model.width=0.25 method.batch_size=64", storage: str = "", seed: int = 0,
                 model_name: str = "coreg-student", device: str = "auto", split_seed: int = 0, data_dir: str = "",
                 download: int = 0, runner: str = "mlflow", out_dir: str | Path = "outputs/pipeline",
                 experiment: str = DEFAULT_EXPERIMENT, main_params: dict[str, Any] | None = None) -> PipelineResult:
    """Run the whole chain (see the module docstring) and return what happened.

    Raises:
        CoregError: bad arguments or a failed step.
    """
    import mlflow

    from coreg.tracking.mlflow import setup_mlflow

    if runner not in RUNNERS:
        raise CoregError(f"unknown runner {runner!r}; valid: {', '.join(RUNNERS)}")
    if n_trials < 0 or epochs < 1:
        raise CoregError("--n-trials must be >= 0 and --epochs >= 1")
    split_overrides(overrides)  # fail early on malformed overrides
    common = {"split_seed": split_seed, "data_dir": data_dir, "download": download}
    annotate_entry, annotate_params = annotation_step(
        annotator, data=data, jsonl=jsonl, clip_model=clip_model, pretrained=pretrained, templates=templates,
        mode=mode, q=q, eta=eta, shots=shots, annotators=annotators, seed=seed, common=common, device=device)
    base = {"data": data, "method": method, "seed": seed, "device": device, **common}
    setup_mlflow()
    client = mlflow_client()
    env_run = os.environ.pop("MLFLOW_RUN_ID", None)
    if env_run:  # under `mlflow run . -e main`: log into that run
        main_run_id = env_run
        exp_id = client.get_run(main_run_id).info.experiment_id
        tag_step_run(main_run_id, ENTRY)
        own_run = False
    else:
        exp_id = experiment_id(experiment)
        main_run_id = create_step_run(ENTRY, experiment_id=exp_id, params=main_params or {})
        own_run = True
    in_process = runner == "in-process"
    if not in_process:
        # `mlflow run --env-manager local` runs `python -m pipelines.<step>`: make it this interpreter.
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = PipelineResult(main_run_id=main_run_id, experiment_id=exp_id, tracking_uri=mlflow.get_tracking_uri())
    steps = StepRunner(experiment_id=exp_id, parent_run_id=main_run_id, in_process=in_process)

    def chain() -> None:
        ann = steps.step(annotate_entry, annotate_params)
        result.steps.append(ann)
        train_base = {**base, "annotations": ann.outputs["annotations"]}
        train_overrides = overrides
        if n_trials > 0:
            tune = steps.step("tune", {**train_base, "n_trials": n_trials, "epochs": trial_epochs,
                                       "warmup": min(trial_warmup, trial_epochs), "overrides": overrides,
                                       "storage": storage})
            result.steps.append(tune)
            # The user's overrides come last: what they pinned wins over the tuned values.
            train_overrides = join_overrides(split_overrides(tune.outputs.get("best_overrides", ""))
                                             + split_overrides(overrides))
        train = steps.step("train", {**train_base, "epochs": epochs, "warmup": warmup, "overrides": train_overrides})
        result.steps.append(train)
        reg = steps.step("register", {"name": model_name, "source": train.run_id})
        result.steps.append(reg)
        result.steps.append(steps.step("export", {"model": reg.outputs["model_uri"], "data_dir": data_dir}))

    try:
        if in_process:
            chain()
        else:
            with mlflow.start_run(run_id=main_run_id):  # makes the project runs its children
                chain()
    except BaseException:
        if own_run:
            client.set_terminated(main_run_id, status="FAILED")
        raise
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    export = result.step("export").outputs
    folder = fetch(export["onnx"], out)
    result.onnx_path = (folder / export.get("onnx_file", "student.onnx")).resolve()
    name, version = result.registered
    finish_step(main_run_id, {"onnx_path": str(result.onnx_path), "registered_model": f"models:/{name}/{version}",
                              **{f"{s.entry_point}_run": s.run_id for s in result.steps}})
    if own_run:
        client.set_terminated(main_run_id, status="FINISHED")
    return result


def where_to_look(result: PipelineResult) -> str:
    """Lines telling the user where the results are."""
    uri = result.tracking_uri
    name, version = result.registered
    lines = [f"tracking URI:      {uri}",
             f"main run:          {result.main_run_id} (experiment id {result.experiment_id})"]
    for s in result.steps:
        lines.append(f"  {s.entry_point:<9s} run {s.run_id} ({'reused' if s.reused else f'{s.seconds:.0f} s'})")
    lines += [f"registered model:  {name} version {version} (models:/{name}@champion)",
              f"ONNX:              {result.onnx_path}",
              f"serve it:          coreg-serve predict --model {result.onnx_path} IMAGE..."]
    if uri.startswith(("sqlite:", "postgresql", "mysql")) or "://" not in uri:
        lines.append(f"browse:            mlflow ui --backend-store-uri {uri}")
    else:
        lines.append(f"browse:            {uri}")
    return "\n".join(lines)


@click.command(ENTRY)
@click.option("--data", default="digits", show_default=True, help="Dataset: digits, cifar10, eurosat, ... or folder:PATH.")
@click.option("--annotator", type=click.Choice(ANNOTATORS), default="instance", show_default=True,
              help="clip: CLIP candidate sets; flip/instance: simulated; import: --jsonl from another model.")
@click.option("--jsonl", default="", help="--annotator import: JSON Lines labels (path or artifact URI).")
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="--annotator clip: open_clip model.")
@click.option("--pretrained", default="openai", show_default=True, help="--annotator clip: pretrained tag.")
@click.option("--templates", default="paper", show_default=True, help="--annotator clip: template set.")
@click.option("--mode", default="multi_prompt", show_default=True, help="--annotator clip: candidate mode.")
@click.option("--q", type=float, default=0.1, show_default=True, help="flip: partial rate.")
@click.option("--eta", type=float, default=0.2, show_default=True, help="flip: noise rate.")
@click.option("--shots", type=int, default=2, show_default=True, help="instance: shots per class.")
@click.option("--annotators", type=int, default=3, show_default=True, help="instance: weak annotators.")
@click.option("--method", default="coreg", show_default=True, help="Training method.")
@click.option("--n-trials", type=int, default=3, show_default=True, help="Optuna trials (0: no tuning).")
@click.option("--trial-epochs", type=int, default=8, show_default=True, help="Epochs per trial.")
@click.option("--trial-warmup", type=int, default=4, show_default=True, help="Warm-up epochs per trial.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Epochs of the final student.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Warm-up epochs of the final student.")
@click.option("--overrides", default="model.width=0.25 method.batch_size=64", show_default=True,
              help="Config overrides for every training (shell words); they win over tuned values.")
@click.option("--storage", default="", help="Optuna storage URL (default: a private sqlite file per tune step).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--model-name", default="coreg-student", show_default=True, help="Registered model name.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--split-seed", type=int, default=0, show_default=True)
@click.option("--data-dir", default="", help="Root of torchvision datasets.")
@click.option("--download", type=click.IntRange(0, 1), default=0, show_default=True, help="1: allow downloads.")
@click.option("--runner", type=click.Choice(RUNNERS), default="mlflow", show_default=True,
              help="mlflow: each step via mlflow.projects.run; in-process: direct calls (faster).")
@click.option("--in-process", is_flag=True, help="Same as --runner in-process.")
@click.option("--out-dir", default="outputs/pipeline", show_default=True, help="Where the ONNX model is downloaded.")
@click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True,
              help="MLflow experiment (ignored under `mlflow run`, which picks it).")
def cli(in_process: bool, **kwargs: Any) -> None:
    """Run the whole pipeline, reusing finished steps (MLflow multistep workflow)."""
    from mlflow.exceptions import MlflowException

    from coreg.cli import setup_logging

    setup_logging(False)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if in_process:
        kwargs["runner"] = "in-process"
    main_params = {k: v for k, v in kwargs.items() if k != "experiment"}
    try:
        result = run_pipeline(**kwargs, main_params=main_params)
    except (CoregError, MlflowException, FileNotFoundError, PermissionError) as e:
        if os.environ.get("COREG_DEBUG"):
            raise
        text = str(e).strip()
        click.echo(f"Error: {text.splitlines()[0] if text else type(e).__name__}", err=True)
        sys.exit(2)
    click.echo(where_to_look(result))


if __name__ == "__main__":  # pragma: no cover
    cli()
