"""``coreg annotate``: CLIP candidate labels.

Thin wrappers: parse flags -> :class:`coreg.annotate.AnnotateConfig` -> one library call -> summary.
Heavy modules (torch, open_clip, mlflow) are imported inside the commands so ``coreg --help`` stays
fast.
"""

from __future__ import annotations

from typing import Any

import click

from coreg._cli._common import data_options, handle_errors, load_data, tracking_run

_MODES_HELP = "multi_prompt (default; union of per-template top-1), topk, prob_ratio, prob_thres, accu_prob_thres"


def annotation_summary(out: str, ann: Any, metrics: dict[str, float], run_id: str | None) -> str:
    """One line: what was written, set size, eta, zero-shot accuracies, the MLflow run."""
    parts = [f"wrote {out}: {ann.num_samples} images x {ann.num_classes} classes",
             f"avg set size {metrics['avg_set_size']:.3f}"]
    if "eta" in metrics:
        parts.append(f"eta {metrics['eta']:.4f}")
    for key, label in (("zero_shot_train_acc", "zero-shot train (t0)"), ("zero_shot_avg_train_acc", "avg"),
                       ("zero_shot_test_acc", "test (t0)"), ("zero_shot_avg_test_acc", "avg")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.4f}")
    if run_id:
        parts.append(f"mlflow run {run_id}")
    return ", ".join(parts)


@click.command("annotate")
@data_options
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of annotate settings (keys as the flags, with underscores); flags override it.")
@click.option("--model", default=None, help="open_clip architecture, e.g. ViT-B-32 (default), ViT-L-14, coreg-tiny.")
@click.option("--pretrained", default=None,
              help="open_clip pretrained tag (default openai) or a checkpoint path; 'none' = random weights "
                   "(tests and benchmarks only: the annotations are random).")
@click.option("--templates", default=None,
              help="paper (the 27 templates of the paper's code, default), paper-full (80), or a text file "
                   "with one template per line, each containing {}.")
@click.option("--mode", default=None, help=f"Candidate mode: {_MODES_HELP}.")
@click.option("--k", type=int, default=None, help="k of topk / prob_ratio (default 5).")
@click.option("--threshold", type=float, default=None,
              help="prob_ratio: share of the top probability (default 0.5); prob_thres: minimum probability "
                   "(default 0.1); accu_prob_thres: cumulative mass to reach (default 0.9).")
@click.option("--class-names", type=click.Path(dir_okay=False), default=None,
              help="YAML mapping every dataset class to a prompt name or a list of names; with several names a "
                   "class's text embedding (per template) is the normalised mean of its names' embeddings. "
                   "Default: the dataset's class names.")
@click.option("--batch-size", type=int, default=None, help="Images per encoder call (default 128).")
@click.option("--workers", type=int, default=None,
              help="DataLoader workers for the preprocessing (default 0 on CPU, up to 8 on a GPU).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Where the model runs (default auto: cuda, then mps, then cpu).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Image-embedding cache (default ~/.cache/coreg/embeddings); reused across template sets "
                   "and modes, and lets an interrupted run resume.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the embedding cache.")
@click.option("--seed", type=int, default=None, help="Seed of random weights with --pretrained none (default 0).")
@click.option("--experiment", default="coreg-annotate", show_default=True, help="MLflow experiment.")
@click.option("--no-track", is_flag=True, help="Do not log an MLflow run.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Annotation file to write (.npz).")
@handle_errors
def annotate(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float,
             config_file: str | None, model: str | None, pretrained: str | None, templates: str | None,
             mode: str | None, k: int | None, threshold: float | None, class_names: str | None,
             batch_size: int | None, workers: int | None, device: str | None, cache_dir: str | None,
             no_cache: bool, seed: int | None, experiment: str, no_track: bool, out: str) -> None:
    """Annotate a dataset with CLIP candidate label sets (spec section 1)."""
    from coreg.annotate import AnnotateConfig, annotate_dataset, load_class_names, load_clip, load_templates
    from coreg.config import build_config

    cfg = build_config(AnnotateConfig, config_file=config_file)
    flags = {"model": model, "pretrained": pretrained, "templates": templates, "mode": mode, "k": k,
             "threshold": threshold, "class_names": class_names, "batch_size": batch_size, "workers": workers,
             "device": device, "cache_dir": cache_dir, "seed": seed}
    cfg = cfg.with_updates({key: v for key, v in flags.items() if v is not None})
    if no_cache:
        cfg = cfg.with_updates({"cache_dir": None})
    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    load_templates(cfg.templates)  # fail on bad templates / class names before loading a large model
    if cfg.class_names:
        load_class_names(cfg.class_names, bundle.classes)
    clip = load_clip(cfg.model, cfg.pretrained, device=cfg.device, seed=cfg.seed)
    with tracking_run(no_track, experiment=experiment, run_name=f"annotate-{bundle.name}-{cfg.model}-{cfg.mode}",
                   tags={"stage": "annotate"}) as tracker:
        result = annotate_dataset(bundle, cfg, out=out, tracker=tracker, clip=clip)
        run_id = tracker.run_id if tracker is not None else None
    click.echo(annotation_summary(out, result.annotation, result.metrics, run_id))
