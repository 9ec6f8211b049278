"""``coreg tune``: an Optuna study, one nested MLflow run per trial."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from coreg._cli._common import data_options, handle_errors, load_data

logger = logging.getLogger(__name__)


@click.command("tune")
@data_options
@click.option("--annotations", "annotations", required=True, type=click.Path(dir_okay=False),
              help="Annotation file (.npz) from annotate, import or simulate.")
@click.option("--method", default="coreg", show_default=True, help="Training method (see `coreg methods`).")
@click.option("--n-trials", type=int, default=20, show_default=True,
              help="Size the study should reach (COMPLETE + PRUNED + RUNNING trials of all workers; "
                   "failed trials are retried). Re-running resumes the study and runs only the rest.")
@click.option("--storage", default="sqlite:///optuna.db", show_default=True,
              help="Optuna storage URL. Processes sharing it (and --study-name) are workers of one study; "
                   "across machines use a server, e.g. postgresql://user:pass@host:5432/optuna.")
@click.option("--study-name", default=None, help="Study name (default <data>-<method>).")
@click.option("--epochs", type=int, default=None, help="Epochs per trial (overrides the config).")
@click.option("--warmup", type=int, default=None, help="Warm-up epochs W (never pruned).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML config file.")
@click.option("--set", "overrides", multiple=True,
              help="Fix a config value in every trial (wins over the search space): --set model.width=0.25")
@click.option("--seed", type=int, default=None, help="Training seed of every trial (and the sampler's default).")
@click.option("--sampler-seed", type=int, default=None,
              help="TPE sampler seed (default --seed); give concurrent workers different values.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None)
@click.option("--gold", "gold_file", type=click.Path(dir_okay=False), default=None,
              help="Few-shot gold labels (CSV 'image,class' or JSONL): held-out ones give val_acc.")
@click.option("--shots", type=int, default=None, help="Benchmarks: reveal K gold labels per class.")
@click.option("--experiment", default="coreg-tune", show_default=True, help="MLflow experiment.")
@click.option("--pruner", type=click.Choice(["median", "hyperband", "none"]), default="median", show_default=True)
@click.option("--metric", type=click.Choice(["auto", "val_approx_acc", "val_covering_rate", "val_acc"]),
              default="auto", show_default=True,
              help="Selection metric of the last epoch to maximise; auto = val_acc with held-out gold "
                   "labels, else val_approx_acc (label-free).")
@click.option("--timeout", type=float, default=None, help="Start no new trial after this many seconds.")
@click.option("--max-failures", type=int, default=3, show_default=True,
              help="Stop this process after this many failed trials in a row.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Trial folders <out>/trial-<n> (default outputs/tune/<study-name>).")
@click.option("--progress", is_flag=True, help="Show progress bars (image decoding, per-epoch steps).")
@handle_errors
def tune_cmd(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float, annotations: str,
             method: str, n_trials: int, storage: str, study_name: str | None, epochs: int | None,
             warmup: int | None, config_file: str | None, overrides: tuple[str, ...], seed: int | None,
             sampler_seed: int | None, device: str | None, gold_file: str | None, shots: int | None,
             experiment: str, pruner: str, metric: str, timeout: float | None, max_failures: int,
             out_dir: str | None, progress: bool) -> None:
    """Tune a method's hyper-parameters with Optuna (TPE, pruning), one nested MLflow run per trial.

    Every trial trains with the method's search space (coreg.tuning.spaces) plus your --set
    values and returns its last epoch's selection metric (maximised). Run the same command in
    several shells or machines to add workers to one study; re-run it to resume. For many
    machines point --storage at a database server, e.g.
    postgresql://user:password@dbhost:5432/optuna (pip install psycopg2-binary).
    """
    import optuna

    from coreg._cli.train import build_train_config, gold_labels, train_tracked
    from coreg.data import load_annotation_for
    from coreg.errors import CoregError
    from coreg.progress import progress_bars
    from coreg.tuning.study import MlflowStudyTracking, TrialReport, TuneConfig, redact_url, run_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trial outcomes are echoed below, one line each
    click.get_current_context().with_resource(progress_bars(progress))  # every bar, decoding included
    base = build_train_config(method, config_file=config_file, overrides=overrides, epochs=epochs, warmup=warmup,
                              seed=seed, device=device)
    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = load_annotation_for(annotations, bundle)
    gold = gold_labels(bundle, gold_file=gold_file, shots=shots, seed=base.seed)
    if metric == "val_acc" and gold is None:
        raise CoregError("--metric val_acc needs few-shot gold labels: pass --gold FILE or --shots K")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", bundle.name.replace("folder:", "")).strip("_")[-40:] or "data"
    name = study_name or f"{safe}-{base.method_name}"
    cfg = TuneConfig(method=base.method_name, n_trials=n_trials, storage=storage, study_name=name,
                     experiment=experiment, pruner=pruner, metric=metric, timeout=timeout,
                     sampler_seed=base.seed if sampler_seed is None else sampler_seed, max_failures=max_failures)
    out = Path(out_dir or Path("outputs") / "tune" / name)

    def build(trial_overrides: Sequence[str]) -> Any:
        # Suggested values first, the user's --set last: what the user pins is not searched.
        return build_train_config(method, config_file=config_file, overrides=[*trial_overrides, *overrides],
                                  epochs=epochs, warmup=warmup, seed=seed, device=device)

    train = functools.partial(train_tracked, bundle=bundle, annotation=ann, annotation_path=annotations, gold=gold,
                              progress=progress, log_checkpoint=False)

    def echo(rep: TrialReport) -> None:
        value = f"{rep.value:.4f}" if rep.value is not None else "-"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rep.params.items())
        extra = f" ({rep.message})" if rep.message and rep.state != "COMPLETE" else ""
        click.echo(f"trial {rep.number:3d} {rep.state:8s} value {value}  {params}{extra}")

    click.echo(f"study {name} ({redact_url(cfg.storage)}), target {n_trials} "
               f"trials, metric {metric}, pruner {pruner}; MLflow experiment {experiment}")
    summary = run_study(cfg, build_config=build, train=train, out_dir=out,
                        tracking=MlflowStudyTracking(experiment=experiment, study_name=name),
                        study_attrs={"data": bundle.name, "data_fingerprint": bundle.fingerprint,
                                     "annotation": str(annotations)},
                        on_trial=echo)
    counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(summary.counts.items()))
    click.echo(f"study {summary.study_name}: {sum(summary.counts.values())} trials ({counts}); "
               f"this process ran {len(summary.ran)} trials; stopped: {summary.stopped}")
    if summary.best_trial is not None:
        click.echo(f"best trial {summary.best_trial}: value {summary.best_value:.4f}, params {summary.best_params}")
        click.echo(f"best run {summary.best_run_id}; study parent run {summary.parent_run_id} (tag best_run)")
        where = "" if storage == "sqlite:///optuna.db" else f" --storage {redact_url(storage)}"
        click.echo(f"register it: coreg register --study {name}{where} --name <model-name>")
    else:
        click.echo("no completed trial yet")
