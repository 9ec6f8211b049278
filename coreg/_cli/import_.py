"""``coreg import``: candidate labels made by another model (LLaVA, GPT-4V, people) from JSONL.

(The module name has a trailing underscore because ``import`` is a Python keyword.)
"""

from __future__ import annotations

from pathlib import Path

import click

from coreg._cli._common import data_options, handle_errors, load_data, tracking_run
from coreg._cli.annotate import annotation_summary


@click.command("import")
@data_options
@click.option("--jsonl", type=click.Path(dir_okay=False), required=True,
              help='JSON Lines: {"image": id or index, "candidates": [names], "scores": {name: p}} per image.')
@click.option("--source-model", default=None, help="The model that made the labels (recorded with the annotation).")
@click.option("--experiment", default="coreg-annotate", show_default=True, help="MLflow experiment.")
@click.option("--no-track", is_flag=True, help="Do not log an MLflow run.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Annotation file to write (.npz).")
@handle_errors
def import_cmd(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float, jsonl: str,
               source_model: str | None, experiment: str, no_track: bool, out: str) -> None:
    """Import candidate labels made by another model from a JSONL file."""
    from coreg.annotate.importer import import_jsonl

    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = import_jsonl(jsonl, bundle, source_model=source_model)
    gold = bundle.train.labels
    sizes = ann.candidates.sum(1)
    metrics = {"avg_set_size": float(sizes.mean())}
    if gold is not None:
        metrics["eta"] = float(1.0 - ann.candidates[range(len(gold)), gold].mean())
    with tracking_run(no_track, experiment=experiment, run_name=f"import-{bundle.name}-{Path(jsonl).stem}",
                   tags={"stage": "annotate"}) as tracker:
        path = ann.save(out)
        run_id = None
        if tracker is not None:
            from coreg.annotate.report import log_annotation

            log_annotation(tracker, ann, path=path, gold=gold, metrics=metrics,
                           params={"annotator": "import", "source": jsonl, "source_model": source_model,
                                   "data": bundle.name})
            run_id = tracker.run_id
    click.echo(annotation_summary(out, ann, metrics, run_id))
