"""The commands that carry versions between registries: ``export`` and ``import``.

Owns their options and what they print; writing and reading bundles is
:class:`registry.Registry`'s (``export``, ``import_bundle``).

Must never import ``registry.pipelines``, torch, SQLAlchemy or the other layers below the
API; the API is reached through ``app.open_registry``.
"""

from __future__ import annotations

import os

import click

from .. import _format
from .app import Command, open_registry
from .output import emit_json, progress, say
from .params import REF, json_option


@click.command(cls=Command)
@click.argument("refs", nargs=-1, required=True, type=REF, metavar="REF...")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle file to write.")
@click.option("--force", is_flag=True, help="Replace the bundle file if it exists.")
@json_option
def export(refs: tuple[str, ...], output: str, force: bool, as_json: bool) -> None:
    """Write versions and their tensors to a self-contained tar bundle."""
    replacing = force and os.path.lexists(output)  # the API's report does not say
    with progress(as_json, "exporting") as bar:
        report = open_registry().export(list(refs), output, overwrite=force, progress=bar)
    if as_json:
        emit_json({**report.to_dict(), "replaced": bool(replacing)})
        return
    say(
        f"exported {', '.join(report.versions)}: {report.tensors} tensors "
        f"({report.blobs} distinct), "
        f"{_format.size(report.bytes)}"
        + ("; replaced the file that was there" if replacing else "")
    )
    click.echo(report.path)


@click.command(cls=Command, name="import")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
def import_(path: str, as_json: bool) -> None:
    """Add the versions of a bundle written by `registry export`."""
    reg = open_registry()
    with progress(as_json, "importing") as bar:
        report = reg.import_bundle(path, progress=bar)
    if as_json:
        emit_json(report.to_dict())
        return
    for note in report.notes:
        say(f"note: {note}")
    for source, target, created in report.versions:
        if not created:
            say(f"{source}: already here as {target}")
            continue
        mv = reg.get(target)
        labels = [f"@{a}" for a in mv.aliases] + [f"{k}={v}" for k, v in mv.tags.items()]
        say(f"{source}: imported as {target}" + (f" ({' '.join(labels)})" if labels else ""))
    say(
        f"wrote {_format.size(report.bytes_written)} "
        f"({report.tensors_written} stored tensors new to this registry)"
    )
    for _source, target, _created in report.versions:
        click.echo(target)
