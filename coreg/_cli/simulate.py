"""``coreg simulate``: synthetic noisy partial labels for a dataset with gold labels."""

from __future__ import annotations

import click

from coreg._cli._common import data_options, handle_errors, load_data


@click.command("simulate")
@data_options
@click.option("--kind", type=click.Choice(["flip", "instance"]), required=True,
              help="flip: the paper's synthetic protocol (q, eta); instance: weak few-shot annotators.")
@click.option("--q", type=float, default=0.1, show_default=True, help="flip: partial rate.")
@click.option("--eta", type=float, default=0.2, show_default=True, help="flip: noise rate.")
@click.option("--shots", type=int, default=2, show_default=True, help="instance: labelled images per class per annotator.")
@click.option("--annotators", type=int, default=3, show_default=True, help="instance: number of weak annotators.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Annotation file to write (.npz).")
@handle_errors
def simulate(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float, kind: str,
             q: float, eta: float, shots: int, annotators: int, seed: int, out: str) -> None:
    """Write synthetic noisy partial labels for a dataset with known gold labels."""
    from coreg.simulate import simulate_annotation

    bundle = load_data(data, data_dir, download, split_seed, split_ratio)
    ann = simulate_annotation(bundle, kind=kind, q=q, eta=eta, shots=shots, annotators=annotators, seed=seed)
    ann.save(out)
    from coreg.data import annotation_stats

    st = annotation_stats(ann, bundle.train.labels)
    click.echo(f"wrote {out}: {ann.num_samples} x {ann.num_classes}, avg set size {st['avg_set_size']:.3f}, "
               f"eta {st['eta']:.3f}")
