"""The commands that carry versions between registries: ``export``, ``import``, ``mirror``.

Owns their options and what they print; writing and reading bundles is
:class:`registry.Registry`'s (``export``, ``import_bundle``, ``mirror``).

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


@click.command(cls=Command)
@click.option(
    "--to-home", type=click.Path(file_okay=False), help="The target registry's home folder."
)
@click.option(
    "--to-database-url",
    metavar="URL",
    help="The target's catalogue (sqlite:///PATH or postgresql+psycopg://...).",
)
@click.option(
    "--to-storage-url",
    metavar="URL",
    help="The target's tensor store (a folder or s3://bucket/prefix).",
)
@click.option("--name", "pattern", metavar="GLOB", help="Only models whose name matches.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Folder for the temporary bundle (default: the system's temporary folder).",
)
@json_option
def mirror(
    to_home: str | None,
    to_database_url: str | None,
    to_storage_url: str | None,
    pattern: str | None,
    workdir: str | None,
    as_json: bool,
) -> None:
    """Copy every version of this registry into another one, on any backend.

    This registry is the one the environment names (REGISTRY_HOME, REGISTRY_DATABASE_URL,
    REGISTRY_STORAGE_URL); the target is only what the --to-* options say: --to-home
    alone is a local registry there, otherwise give both --to-database-url and
    --to-storage-url (a target never falls back to this environment's settings).
    Lineage, tags, aliases and history come along; running it again copies only what
    is new.
    """
    from pathlib import Path

    if to_home is None and not (to_database_url and to_storage_url):
        raise click.UsageError(
            "name the target with --to-home, or with both --to-database-url and --to-storage-url"
        )
    if to_home is not None:
        home = Path(to_home).expanduser().absolute()
        to_database_url = to_database_url or f"sqlite:///{home / 'registry.db'}"
        to_storage_url = to_storage_url or str(home / "objects")
    source = open_registry()
    target = open_registry(home=to_home, database_url=to_database_url, storage_url=to_storage_url)
    with progress(as_json, "mirroring") as bar:
        report = source.mirror(target, pattern, workdir=workdir, progress=bar)
    if as_json:
        emit_json(report.to_dict())
        return
    for note in report.notes:
        say(f"note: {note}")
    created = sum(1 for _s, _t, c in report.versions if c)
    say(
        f"mirrored {len(report.versions)} versions ({created} new to the target, "
        f"{len(report.versions) - created} already there); wrote "
        f"{_format.size(report.bytes_written)} ({report.tensors_written} tensors)"
    )
    for _source, target_ref, _created in report.versions:
        click.echo(target_ref)
