"""``coreg report``: statistics of an annotation file (set sizes, eta, per class and per template)."""

from __future__ import annotations

import json
from typing import Any

import click

from coreg._cli._common import data_options, handle_errors, load_data


@click.command("report")
@click.argument("annotation", type=click.Path(dir_okay=False))
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handle_errors
def report(annotation: str, data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float,
           as_json: bool) -> None:
    """Statistics of an annotation file: set sizes, eta, per class and per template."""
    from coreg.data import annotation_stats, load_annotation_for

    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = load_annotation_for(annotation, bundle)
    st = annotation_stats(ann, bundle.train.labels)
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(format_report(st))


def format_report(st: dict[str, Any]) -> str:
    """Readable table of :func:`coreg.data.annotation_stats`."""
    lines = [f"annotator: {st['annotator']}   samples: {st['num_samples']}   classes: {st['num_classes']}",
             f"average set size: {st['avg_set_size']:.3f}"]
    if "eta" in st:
        lines.append(f"eta (true label not in set): {st['eta']:.4f}   single-label accuracy: {st['single_label_acc']:.4f}")
        width = max(8, *(len(p["class"]) for p in st["per_class"]))
        lines.append(f"{'class':<{width}}  {'n':>6}  {'avg |S|':>8}  {'eta':>7}")
        for p in st["per_class"]:
            lines.append(f"{p['class']:<{width}}  {p['n']:>6}  {p['avg_set_size']:>8.3f}  {p['eta']:>7.4f}")
    if "per_template_acc" in st:
        names = st.get("templates") or [f"template {i}" for i in range(len(st["per_template_acc"]))]
        lines.append("per-template (or per-annotator) top-1 accuracy:")
        for name, acc in zip(names, st["per_template_acc"]):
            lines.append(f"  {acc:7.4f}  {name}")
    return "\n".join(lines)
