"""``coreg methods``: the training methods."""

from __future__ import annotations

import click


@click.command("methods")
def methods_cmd() -> None:
    """List the training methods."""
    from coreg.methods import get_method, list_methods

    for name in list_methods():
        doc = (get_method(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:14s} {doc[0] if doc else ''}")
