"""Entry point ``simulate``: synthetic noisy candidate labels for a dataset with gold labels.

``python -m pipelines.simulate --data digits --kind instance`` (or ``mlflow run . -e simulate``).
Output: ``annotations`` = ``runs:/<run>/annotation/annotation.npz``.
"""

from __future__ import annotations

import click

from pipelines._common import (
    data_params,
    load_bundle,
    record_annotation,
    run_options,
    step_main,
)

ENTRY = "simulate"


def run(*, run_id: str, data: str, kind: str = "instance", q: float = 0.1, eta: float = 0.2, shots: int = 2,
        annotators: int = 3, seed: int = 0, split_seed: int = 0, data_dir: str = "",
        download: int = 0) -> dict[str, str]:
    """Simulate an annotation of ``data``'s training split and log it to run ``run_id``.

    Returns:
        ``{"annotations": URI, "single_label_acc": ..., "eta": ...}``.
    """
    from coreg.simulate import simulate_annotation

    bundle = load_bundle(data, data_dir=data_dir, download=download, split_seed=split_seed)
    ann = simulate_annotation(bundle, kind=kind, q=q, eta=eta, shots=shots, annotators=annotators, seed=seed)
    return record_annotation(run_id, ann, bundle)


@click.command(ENTRY)
@data_params
@click.option("--kind", type=click.Choice(["flip", "instance"]), default="instance", show_default=True,
              help="flip: the paper's protocol (q, eta); instance: weak few-shot annotators.")
@click.option("--q", type=float, default=0.1, show_default=True, help="flip: partial rate.")
@click.option("--eta", type=float, default=0.2, show_default=True, help="flip: noise rate.")
@click.option("--shots", type=int, default=2, show_default=True, help="instance: images per class per annotator.")
@click.option("--annotators", type=int, default=3, show_default=True, help="instance: number of annotators.")
@click.option("--seed", type=int, default=0, show_default=True, help="Generator seed.")
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Simulate noisy candidate labels (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
