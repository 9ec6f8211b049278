"""The ``coreg`` command line: thin click wrappers around library functions.

Every command turns :class:`coreg.errors.CoregError` (and other expected input errors) into a
one-line ``Error: ...`` message and exit code 2; no traceback reaches the user unless
``COREG_DEBUG=1``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from coreg.errors import CoregError

logger = logging.getLogger("coreg")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("mlflow", "alembic", "urllib3", "matplotlib", "PIL", "optuna", "git", "httpx", "filelock",
                  "onnxscript", "onnx_ir", "onnxruntime", "torch.onnx", "torch._dynamo", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: expected errors become ``Error: <one line>`` on stderr and exit 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except (CoregError, ValueError, FileNotFoundError, PermissionError) as e:
            # ValueError: the library validates arguments with it (STYLE section 5); for a user of
            # the command line it is bad input, not a crash. COREG_DEBUG=1 shows the traceback.
            if os.environ.get("COREG_DEBUG"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            click.echo(f"Error: {msg}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted; completed work is saved (re-run with --resume where supported).", err=True)
            sys.exit(130)

    return wrapper


def data_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The shared ``--data``/``--data-dir``/``--download``/``--split-seed``/``--split-ratio`` options."""
    fn = click.option("--split-ratio", type=float, default=0.8, show_default=True,
                      help="Train share when a dataset has no official test split.")(fn)
    fn = click.option("--split-seed", type=int, default=0, show_default=True,
                      help="Seed of a split the dataset does not ship (stored with annotations).")(fn)
    fn = click.option("--download/--no-download", default=False, show_default=True,
                      help="Let torchvision download a missing dataset.")(fn)
    fn = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                      help="Root of torchvision datasets (default $COREG_DATA_DIR or ~/.cache/coreg/data).")(fn)
    fn = click.option("--data", "data", required=True,
                      help="Dataset: digits, cifar10, cifar100, svhn, fmnist, eurosat, gtsrb, fer2013 or folder:PATH.")(fn)
    return fn


def load_data(data: str, data_dir: str | None, download: bool, split_seed: int, split_ratio: float) -> Any:
    from coreg.data import load_dataset

    return load_dataset(data, data_dir=data_dir, download=download, seed=split_seed, split_ratio=split_ratio)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="coreg")
def main(verbose: bool) -> None:
    """coreg: a small student classifier from a vision-language model's noisy candidate labels."""
    _setup_logging(verbose)


# --------------------------------------------------------------------------- simulate / report


@main.command()
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


@main.command()
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


# --------------------------------------------------------------------------- other stages
# Each stage's command lives in its own module to keep this file thin; importing them here
# registers them on the group.


def _register_stage_commands() -> None:
    import importlib

    for mod in ("coreg._cli.annotate", "coreg._cli.train", "coreg._cli.tune", "coreg._cli.export"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue
            raise
        for cmd in getattr(m, "COMMANDS", []):
            main.add_command(cmd)


_register_stage_commands()


if __name__ == "__main__":  # pragma: no cover
    main()


def run(args: list[str]) -> None:  # pragma: no cover - convenience for notebooks
    """Run the CLI in-process with ``args``."""
    main.main(args=args, standalone_mode=False)

