"""Shared parts of the ``coreg`` commands: logging set-up, error handling, data options, MLflow runs.

Every command turns :class:`coreg.errors.CoregError` (and other expected input errors) into a
one-line ``Error: ...`` message and exit code 2 (:func:`handle_errors`); no traceback reaches the
user unless ``COREG_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from coreg.errors import CoregError

logger = logging.getLogger("coreg")


def setup_logging(verbose: bool) -> None:
    """coreg's INFO lines on stderr; third-party libraries only from WARNING (unless ``verbose``)."""
    # MLflow configures its own loggers when it is imported (INFO: database set-up, experiment
    # creation, input-example validation); its documented setting keeps them at WARNING.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "DEBUG" if verbose else "WARNING")
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
    """The dataset of the shared data options."""
    from coreg.data import load_dataset

    return load_dataset(data, data_dir=data_dir, download=download, seed=split_seed, split_ratio=split_ratio)


@contextlib.contextmanager
def tracking_run(no_track: bool, *, experiment: str, run_name: str, tags: dict[str, Any]) -> Iterator[Any]:
    """A new MLflow run's tracker, or ``None`` with ``no_track``."""
    if no_track:
        yield None
        return
    from coreg.tracking.mlflow import MlflowTracker

    with MlflowTracker.start(experiment=experiment, run_name=run_name, tags=tags) as tracker:
        yield tracker
