"""Entry point ``import``: another model's candidate labels from JSON Lines.

``python -m pipelines.import_labels --data digits --jsonl labels.jsonl`` (or ``mlflow run . -e
import``). Output: ``annotations`` = ``runs:/<run>/annotation/annotation.npz``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pipelines._common import (
    data_params,
    fetch,
    load_bundle,
    record_annotation,
    run_options,
    step_main,
)

ENTRY = "import"


def run(*, run_id: str, data: str, jsonl: str, source_model: str = "", split_seed: int = 0, data_dir: str = "",
        download: int = 0) -> dict[str, str]:
    """Import ``jsonl`` (a path or artifact URI) for ``data`` and log the annotation to run ``run_id``."""
    from coreg.annotate.importer import import_jsonl
    from coreg.errors import CoregError

    if not jsonl:
        raise CoregError("the import step needs --jsonl FILE (a path or an artifact URI)")
    bundle = load_bundle(data, data_dir=data_dir, download=download, split_seed=split_seed)
    with tempfile.TemporaryDirectory(prefix="coreg-import-") as tmp:
        ann = import_jsonl(fetch(jsonl, Path(tmp) / "in"), bundle, source_model=source_model or None)
    return record_annotation(run_id, ann, bundle)


@click.command(ENTRY)
@data_params
@click.option("--jsonl", required=True,
              help='JSON Lines file or artifact URI: {"image": id or index, "candidates": [names], ...} per image.')
@click.option("--source-model", default="", help="The model that made the labels (recorded).")
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Import another model's candidate labels (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
