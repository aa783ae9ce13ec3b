"""The commands about architectures: ``identify`` (which fit these weights) and
``archs`` (which can be rebuilt by name).

Owns their options and tables; matching weights to architectures is
:meth:`registry.Registry.identify`.

Must never import torch, SQLAlchemy or ``registry.architectures`` at module level:
``archs`` imports the latter when it runs (see the note there).
"""

from __future__ import annotations

import sys

import click

from .. import _format
from .app import Command, open_registry
from .output import emit_json
from .params import json_option


@click.command(cls=Command)
@click.argument("path")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
@json_option
def identify(path: str, top: int, as_json: bool) -> None:
    """Name the architectures whose keys and shapes best fit the weights in PATH."""
    matches = open_registry().identify(path, limit=top)
    if as_json:
        emit_json([m.to_dict() for m in matches])
        if not matches:  # the same exit code as without --json
            sys.exit(1)
        return
    if not matches:
        raise click.ClickException(
            "no known architecture shares any key and shape with these weights"
        )
    from ..keyvalue import format_kwargs

    rows = [
        [f"{m.score:.0%}", f"{m.name}({format_kwargs(m.arch_kwargs)})", m.source] for m in matches
    ]
    click.echo(_format.table(["SCORE", "ARCH", "SOURCE"], rows, right=(0,)))


@click.command(cls=Command)
@json_option
def archs(as_json: bool) -> None:
    """List the architectures the registry can rebuild by name, and where each comes from.

    Also accepted wherever an architecture is asked for: package.module:Class
    import paths, and timm:NAME when timm is installed.
    """
    # Registry.architectures() answers the same, but opening a Registry resolves (and
    # checks) REGISTRY_HOME, which listing architectures has never needed.
    from .. import architectures

    found = architectures.available()
    if as_json:
        emit_json([{"name": n, "source": source} for n, source in found])
        return
    click.echo(_format.table(["ARCH", "SOURCE"], [[n, source] for n, source in found]))
