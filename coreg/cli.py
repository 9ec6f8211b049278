"""The ``coreg`` command line: the click group; every command lives in its own ``coreg._cli.<name>`` module.

The commands are thin wrappers around library functions. Their shared options, logging set-up
and error handling (``Error: <one line>``, exit code 2, no traceback unless ``COREG_DEBUG=1``)
are in :mod:`coreg._cli._common`, re-exported here.
"""

from __future__ import annotations

import click

from coreg._cli._common import data_options, handle_errors, load_data, setup_logging
from coreg._cli.annotate import annotate
from coreg._cli.export import export
from coreg._cli.import_ import import_cmd
from coreg._cli.methods import methods_cmd
from coreg._cli.register import register_cmd
from coreg._cli.report import report
from coreg._cli.simulate import simulate
from coreg._cli.train import train_cmd
from coreg._cli.tune import tune_cmd

__all__ = ["main", "data_options", "handle_errors", "load_data", "setup_logging"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="coreg")
def main(verbose: bool) -> None:
    """coreg: a small student classifier from a vision-language model's noisy candidate labels."""
    setup_logging(verbose)


for _command in (simulate, annotate, import_cmd, report, train_cmd, methods_cmd, tune_cmd, register_cmd, export):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
