"""Entry point ``annotate``: CLIP candidate labels (open_clip).

``python -m pipelines.annotate --data eurosat --model ViT-B-32 --pretrained openai`` (or ``mlflow
run . -e annotate``). Offline: ``--model coreg-tiny --pretrained none`` (random weights, random
labels: for tests only). Output: ``annotations`` = ``runs:/<run>/annotation/annotation.npz``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from pipelines._common import (
    data_params,
    finish_step,
    load_bundle,
    log_annotation_step,
    run_options,
    step_main,
    step_tracker,
)

ENTRY = "annotate"


def run(*, run_id: str, data: str, model: str = "ViT-B-32", pretrained: str = "openai", templates: str = "paper",
        mode: str = "multi_prompt", k: int = 0, threshold: float = 0.0, batch_size: int = 128,
        device: str = "auto", seed: int = 0, split_seed: int = 0, data_dir: str = "",
        download: int = 0) -> dict[str, str]:
    """Annotate ``data``'s training split with CLIP and log the annotation to run ``run_id``.

    ``k`` and ``threshold`` of 0 mean the mode's default.
    """
    from coreg.annotate import AnnotateConfig, annotate_dataset, load_clip, load_templates

    cfg = AnnotateConfig().with_updates({
        "model": model, "pretrained": pretrained, "templates": templates, "mode": mode, "batch_size": batch_size,
        "device": device, "seed": seed, **({"k": k} if k else {}), **({"threshold": threshold} if threshold else {})})
    bundle = load_bundle(data, data_dir=data_dir, download=download, split_seed=split_seed)
    load_templates(cfg.templates)  # fail on bad templates before loading a large model
    clip = load_clip(cfg.model, cfg.pretrained, device=cfg.device, seed=cfg.seed)
    with tempfile.TemporaryDirectory(prefix="coreg-annotate-") as tmp, step_tracker(run_id) as tracker:
        result = annotate_dataset(bundle, cfg, out=Path(tmp) / "annotation.npz", tracker=tracker, clip=clip,
                                  progress=False)
        metrics = log_annotation_step(tracker, result.annotation, result.path, bundle, log_files=False)
    outputs = {"annotations": f"runs:/{run_id}/annotation/{Path(result.path).name}",
               **{k_: f"{v:.6g}" for k_, v in metrics.items()}}
    finish_step(run_id, outputs)
    return outputs


@click.command(ENTRY)
@data_params
@click.option("--model", default="ViT-B-32", show_default=True, help="open_clip architecture (coreg-tiny offline).")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip pretrained tag or checkpoint path; 'none' = random weights (tests only).")
@click.option("--templates", default="paper", show_default=True, help="paper, paper-full or a text file.")
@click.option("--mode", default="multi_prompt", show_default=True,
              help="multi_prompt, topk, prob_ratio, prob_thres, accu_prob_thres.")
@click.option("--k", type=int, default=0, show_default=True, help="k of topk/prob_ratio (0: default).")
@click.option("--threshold", type=float, default=0.0, show_default=True, help="Mode threshold (0: default).")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Images per encoder call.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of random weights (pretrained none).")
@run_options
def cli(run_id: str | None, experiment: str, **params: object) -> None:
    """Annotate a dataset with CLIP candidate sets (pipeline step; logs into $MLFLOW_RUN_ID)."""
    step_main(ENTRY, run, run_id=run_id, experiment=experiment, params=dict(params))


if __name__ == "__main__":  # pragma: no cover
    cli()
