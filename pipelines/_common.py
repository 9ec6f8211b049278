"""Shared plumbing of the pipeline steps: the step's MLflow run, outputs, code version, errors.

The run protocol (the same under ``mlflow run`` and in :mod:`pipelines.main`'s in-process mode):

* A step works inside one run: ``--run-id``, else ``$MLFLOW_RUN_ID`` (set by ``mlflow run``),
  else a new run in ``--experiment`` (plain ``python -m pipelines.<step>``).
* The run is tagged ``coreg.entry_point`` and ``coreg.code_version``; the step's parameters
  are run parameters (logged by ``mlflow run``, by :mod:`pipelines.main`, or here).
* Outputs are artifacts of that run; their URIs (``runs:/<id>/...``) are recorded as tags
  ``coreg.out.<key>``, and ``coreg.step_complete=true`` is set last, so an interrupted step is
  never reused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from coreg.errors import CoregError

logger = logging.getLogger("coreg.pipelines")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ENTRY_TAG = "coreg.entry_point"
CODE_TAG = "coreg.code_version"
COMPLETE_TAG = "coreg.step_complete"
OUT_PREFIX = "coreg.out."
DEFAULT_EXPERIMENT = "coreg"


# --------------------------------------------------------------------------- small helpers


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the project checkout, else ``src-<hash>`` of the package sources.

    Reuse of finished steps is keyed on this (with the entry point and its parameters).
    """
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
        if out.returncode == 0 and len(out.stdout.strip()) == 40:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    h = hashlib.sha256()
    for folder in ("coreg", "pipelines", "serving"):
        for f in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            h.update(str(f.relative_to(PROJECT_ROOT)).encode())
            h.update(f.read_bytes())
    for name in ("MLproject", "pyproject.toml"):
        if (PROJECT_ROOT / name).exists():
            h.update((PROJECT_ROOT / name).read_bytes())
    return f"src-{h.hexdigest()[:16]}"


def split_overrides(text: str) -> list[str]:
    """``"lr=0.02 model.width=0.25"`` (shell words) -> ``["lr=0.02", "model.width=0.25"]``."""
    try:
        words = shlex.split(text or "")
    except ValueError as e:
        raise CoregError(f"cannot parse overrides {text!r}: {e}") from None
    for w in words:
        if "=" not in w:
            raise CoregError(f"override {w!r} is not key=value")
    return words


def join_overrides(items: list[str]) -> str:
    """Inverse of :func:`split_overrides`."""
    return shlex.join(items)


def param_equal(stored: str | None, wanted: Any) -> bool:
    """Whether a logged parameter equals ``wanted`` (``mlflow run`` logs values shell-quoted)."""
    if stored is None:
        return False
    w = str(wanted)
    return stored == w or stored == shlex.quote(w)


def fetch(uri_or_path: str, dst: str | Path | None = None) -> Path:
    """A local path for a file/folder path or an MLflow artifact URI (``runs:/``, ``models:/``, ...).

    Raises:
        CoregError: neither an existing path nor a downloadable URI.
    """
    p = Path(uri_or_path)
    if uri_or_path and p.exists():
        return p
    if "://" not in uri_or_path and not uri_or_path.startswith(("runs:/", "models:/")):
        raise CoregError(f"{uri_or_path!r} is neither an existing file nor an artifact URI (runs:/...)")
    import mlflow
    from mlflow.exceptions import MlflowException

    from coreg.tracking.mlflow import setup_mlflow

    setup_mlflow()
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri_or_path,
                                                    dst_path=str(dst) if dst is not None else None)
    except (MlflowException, OSError) as e:
        raise CoregError(f"cannot download {uri_or_path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
                         ) from None
    return Path(local)


def load_bundle(data: str, *, data_dir: str = "", download: int | bool = 0, split_seed: int = 0) -> Any:
    """The dataset (the same split rule as the ``coreg`` CLI: ratio 0.8 where none ships)."""
    from coreg.cli import load_data

    return load_data(data, data_dir or None, bool(download), split_seed, 0.8)


def run_coreg(args: list[str]) -> None:
    """Run one ``coreg`` CLI command in this process (its one-line errors stay one line).

    Raises:
        CoregError: the command exited with a non-zero status.
    """
    from coreg.cli import main as coreg_main

    try:
        coreg_main.main(args=args, prog_name="coreg", standalone_mode=False)
    except SystemExit as e:
        if e.code not in (0, None):
            raise CoregError(f"`coreg {args[0]}` failed (exit {e.code}); see the message above") from None
    except click.ClickException as e:
        raise CoregError(f"`coreg {args[0]}`: {e.format_message()}") from None


# --------------------------------------------------------------------------- runs


def mlflow_client() -> Any:
    from mlflow.tracking import MlflowClient

    from coreg.tracking.mlflow import setup_mlflow

    setup_mlflow()
    return MlflowClient()


def experiment_id(name: str) -> str:
    """Id of experiment ``name`` (created when missing)."""
    client = mlflow_client()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name)


def create_step_run(entry_point: str, *, experiment_id: str, params: Mapping[str, Any],
                    parent_run_id: str | None = None) -> str:
    """A new (RUNNING) run for ``entry_point`` with its parameters and tags, as ``mlflow run`` makes."""
    from mlflow.entities import Param

    tags = {ENTRY_TAG: entry_point, CODE_TAG: code_version(), "mlflow.project.entryPoint": entry_point}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    client = mlflow_client()
    run = client.create_run(experiment_id, run_name=entry_point, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def tag_step_run(run_id: str, entry_point: str) -> None:
    """Tag an existing run (e.g. one ``mlflow run`` created) as a pipeline step."""
    client = mlflow_client()
    client.set_tag(run_id, ENTRY_TAG, entry_point)
    client.set_tag(run_id, CODE_TAG, code_version())


def finish_step(run_id: str, outputs: Mapping[str, str]) -> None:
    """Record outputs as ``coreg.out.*`` tags, then mark the step complete."""
    client = mlflow_client()
    for k, v in outputs.items():
        client.set_tag(run_id, OUT_PREFIX + k, str(v))
    client.set_tag(run_id, COMPLETE_TAG, "true")


def run_outputs(run: Any) -> dict[str, str]:
    """The ``coreg.out.*`` tags of a run, without the prefix."""
    return {k[len(OUT_PREFIX):]: v for k, v in run.data.tags.items() if k.startswith(OUT_PREFIX)}


def experiment_name_of(run_id: str) -> str:
    """Name of the experiment holding ``run_id``."""
    client = mlflow_client()
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


class StepTracker:
    """An :class:`~coreg.tracking.mlflow.MlflowTracker` that never re-logs a parameter.

    The step's own parameters are already on the run (``data``, ``epochs``...); library code
    logs its resolved config too. Equal values are skipped; a different value (e.g. a default
    that the library resolved) is logged as ``resolved.<key>`` instead of failing, since MLflow
    parameters are immutable.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def log_params(self, params: dict[str, Any]) -> None:
        existing = mlflow_client().get_run(self._inner.run_id).data.params
        out: dict[str, Any] = {}
        for k, v in params.items():
            if k not in existing:
                out[k] = v
            elif not param_equal(existing[k], v) and f"resolved.{k}" not in existing:
                out[f"resolved.{k}"] = v
        if out:
            self._inner.log_params(out)


@contextlib.contextmanager
def step_tracker(run_id: str) -> Iterator[StepTracker]:
    """Open (resume) the step's run as the active run; it ends FINISHED, or FAILED on an exception."""
    import mlflow

    from coreg.tracking.mlflow import MlflowTracker

    os.environ.pop("MLFLOW_RUN_ID", None)
    # start_run(run_id) refuses a run outside the process's active experiment: select the run's own.
    mlflow.set_experiment(experiment_id=mlflow_client().get_run(run_id).info.experiment_id)
    with MlflowTracker.start(run_id=run_id) as tracker:
        yield StepTracker(tracker)


def resolve_run(entry_point: str, *, run_id: str | None, experiment: str, params: Mapping[str, Any]) -> str:
    """The run a step logs into: ``run_id``, ``$MLFLOW_RUN_ID``, or a new run in ``experiment``."""
    rid = run_id or os.environ.pop("MLFLOW_RUN_ID", None)
    if rid:
        tag_step_run(rid, entry_point)
        existing = mlflow_client().get_run(rid).data.params
        missing = {k: v for k, v in params.items() if k not in existing}
        if missing:
            from mlflow.entities import Param

            mlflow_client().log_batch(rid, params=[Param(k, str(v)) for k, v in missing.items()])
        return rid
    return create_step_run(entry_point, experiment_id=experiment_id(experiment), params=params)


# --------------------------------------------------------------------------- click glue


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def step_main(entry_point: str, fn: Callable[..., dict[str, str]], *, run_id: str | None, experiment: str,
              params: dict[str, Any]) -> None:
    """Body of every step command: resolve the run, run the step, print its outputs.

    Expected errors (bad input, a missing run or artifact) print one ``Error:`` line and exit 2;
    ``COREG_DEBUG=1`` shows the traceback. The run is marked FAILED.
    """
    from mlflow.exceptions import MlflowException

    rid: str | None = None
    try:
        rid = resolve_run(entry_point, run_id=run_id, experiment=experiment, params=params)
        outputs = fn(run_id=rid, **params)
    except (CoregError, MlflowException, FileNotFoundError, PermissionError, ValueError) as e:
        if rid:
            with contextlib.suppress(Exception):
                mlflow_client().set_terminated(rid, status="FAILED")
        if os.environ.get("COREG_DEBUG"):
            raise
        click.echo(f"Error: {_one_line(e)}", err=True)
        sys.exit(2)
    click.echo(f"{entry_point}: MLflow run {rid}")
    for k, v in outputs.items():
        click.echo(f"  {k}: {v}")


def run_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--run-id`` and ``--experiment`` shared by every step command."""
    fn = click.option("--experiment", default=DEFAULT_EXPERIMENT, show_default=True,
                      help="MLflow experiment of a new run (ignored under `mlflow run` or with --run-id).")(fn)
    fn = click.option("--run-id", default=None,
                      help="Log into this existing run (default $MLFLOW_RUN_ID, else a new run).")(fn)
    return fn


def data_params(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--data``, ``--split-seed``, ``--data-dir``, ``--download`` shared by the data steps."""
    fn = click.option("--download", type=click.IntRange(0, 1), default=0, show_default=True,
                      help="1: let torchvision download a missing dataset.")(fn)
    fn = click.option("--data-dir", default="", help="Root of torchvision datasets (default $COREG_DATA_DIR).")(fn)
    fn = click.option("--split-seed", type=int, default=0, show_default=True,
                      help="Seed of a split the dataset does not ship.")(fn)
    fn = click.option("--data", required=True, help="Dataset: digits, cifar10, eurosat, ... or folder:PATH.")(fn)
    return fn


def log_annotation_step(tracker: Any, ann: Any, path: Path, bundle: Any, *, log_files: bool = True) -> dict[str, float]:
    """Log an annotation's figures/file (unless the library already did) and its accuracy metrics."""
    from coreg.data import annotation_stats

    gold = bundle.train.labels
    metrics: dict[str, float] = {"avg_set_size": float(ann.candidates.sum(1).mean())}
    if gold is not None:
        st = annotation_stats(ann, gold)
        metrics.update({"eta": float(st["eta"]), "single_label_acc": float(st["single_label_acc"])})
    if log_files:
        from coreg.annotate.report import log_annotation

        log_annotation(tracker, ann, path=path, gold=gold, metrics=metrics, params={})
    else:
        tracker.log_metrics(metrics)
    return metrics


def record_annotation(run_id: str, ann: Any, bundle: Any) -> dict[str, str]:
    """Save ``ann`` as run ``run_id``'s ``annotation/annotation.npz``, log its figures and metrics,
    mark the step complete; returns the step outputs (the annotation URI and the metrics)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="coreg-annotation-") as tmp, step_tracker(run_id) as tracker:
        path = ann.save(Path(tmp) / "annotation.npz")
        tracker.set_tags({"coreg.stage": "annotate"})
        metrics = log_annotation_step(tracker, ann, path, bundle)
    outputs = {"annotations": f"runs:/{run_id}/annotation/{path.name}",
               **{k: f"{v:.6g}" for k, v in metrics.items()}}
    finish_step(run_id, outputs)
    return outputs
