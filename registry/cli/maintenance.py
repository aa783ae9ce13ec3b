"""The commands that look after the store and the catalogue: ``gc``, ``verify`` and the
``db`` group (``db upgrade``, ``db current``, ``db grant-reader``).

Owns their options, their reports' wording and ``verify``'s exit code 1 when something
is damaged; collecting garbage, re-hashing and migrating are :class:`registry.Registry`'s.

Must never import torch, SQLAlchemy or the layers below the API at module level (the
schema revision this release needs comes from the torch- and SQLAlchemy-free leaf
``catalog.revision``, imported when ``db current`` runs).
"""

from __future__ import annotations

import sys

import click

from .. import _format
from .app import Command, Group, open_registry
from .output import emit_json, say
from .params import REF, json_option


@click.command(cls=Command)
@click.option("--no-gc", is_flag=True, help="Do not list the store to say what gc would free.")
@json_option
def storage(no_gc: bool, as_json: bool) -> None:
    """Bytes of all versions against bytes stored: what dedup saved, what gc would free."""
    report = open_registry().storage(gc=not no_gc)
    if as_json:
        emit_json(report.to_dict())
        return
    size = _format.size
    lines = [
        ("versions", f"{report.versions:,} in {report.models:,} models"),
        ("logical", f"{size(report.logical_bytes)} (every version's tensors, counted per version)"),
        ("unique", f"{size(report.unique_bytes)} (each distinct tensor once)"),
        ("stored", f"{size(report.stored_bytes)} in {report.packs:,} packs"),
        ("dedup saved", size(report.saved_bytes)),
    ]
    if report.gc is not None:
        lines.append(("gc would free", size(report.gc.bytes_freed)))
    click.echo("\n".join(f"{k.ljust(13)}  {v}" for k, v in lines))


@click.command(cls=Command)
@click.option("--dry-run", is_flag=True, help="Only say what would be freed.")
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Delete files no version names once this old, when their writer cannot be "
    "seen from here or left no record (default: 3600 for packs, 86400 for unfinished "
    "uploads). Files of a writer known gone go at once; of one still running, never. "
    "0: no push runs elsewhere, bring the store back to exactly what versions use.",
)
@json_option
def gc(dry_run: bool, grace: float | None, as_json: bool) -> None:
    """Delete stored tensors that no version uses any more, and files crashed writers left."""
    report = open_registry().gc(dry_run=dry_run, grace=grace)
    if as_json:
        emit_json(report.to_dict())
        return
    verb = "would free" if dry_run else "freed"
    say(
        f"{verb} {_format.size(report.bytes_freed)}: {report.blobs_removed} unused tensors, "
        f"{report.packs_removed} packs deleted, {report.packs_rewritten} rewritten"
        + (f", {report.orphan_files_removed} leftover files" if report.orphan_files_removed else "")
    )
    click.echo(report.bytes_freed)


@click.command(cls=Command)
@click.argument("ref", required=False, type=REF)
@json_option
def verify(ref: str | None, as_json: bool) -> None:
    """Re-hash stored tensors (of REF, or all) and report corrupt or missing ones."""
    report = open_registry().verify(ref)
    if as_json:
        emit_json(report.to_dict())
    else:
        for problem in report.corrupt + report.missing:
            click.echo(str(problem))
        if report.ok:
            verdict = "all intact"
        elif report.ref:  # counted as the version's tensors, however they are stored
            verdict = f"{report.affected('corrupt')} corrupt, {report.affected('missing')} missing"
        else:
            uses = report.affected("corrupt") + report.affected("missing")
            verdict = (
                f"{len(report.corrupt)} corrupt, {len(report.missing)} missing "
                f"(used by {uses} tensor{'s' if uses != 1 else ''} of versions)"
            )
        scope = f"tensors of {report.ref}" if report.ref else "stored tensors"
        say(f"checked {report.checked} {scope} ({_format.size(report.checked_bytes)}): {verdict}")
    if not report.ok:
        sys.exit(1)


@click.group(cls=Group)
def db() -> None:
    """Manage the catalogue database schema."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Apply pending schema migrations to the catalogue database."""
    before, after = open_registry().upgrade_database()
    if as_json:
        emit_json({"before": before, "after": after})
        return
    if before == after:
        say(f"database schema is up to date (revision {after})")
    else:
        say(f"upgraded database schema from {before or 'empty'} to {after}")
    click.echo(after)


@db.command()
@json_option
def current(as_json: bool) -> None:
    """Print the catalogue database's schema revision and the one this release needs."""
    from ..catalog.revision import SCHEMA_REVISION

    revision = open_registry().database_revision()
    if as_json:
        emit_json(
            {
                "current": revision,
                "required": SCHEMA_REVISION,
                "up_to_date": revision == SCHEMA_REVISION,
            }
        )
        return
    state = (
        "up to date"
        if revision == SCHEMA_REVISION
        else f"needs {SCHEMA_REVISION}: run `registry db upgrade`"
    )
    click.echo(f"{revision or 'none'} ({state})")


@db.command("grant-reader")
@click.argument("role")
@click.option(
    "--run",
    is_flag=True,
    help="Execute the statements (as the catalogue's current, privileged, role) "
    "instead of printing them.",
)
@json_option
def grant_reader(role: str, run: bool, as_json: bool) -> None:
    """Print the SQL that lets the PostgreSQL role ROLE read the catalogue, and only read.

    CONNECT on the database, USAGE on its schema, SELECT on every table, and SELECT on
    the tables later migrations add. With --run, execute them and say so. Give the
    role's users REGISTRY_DATABASE_URL with their own user name: list, show, diff,
    log, pull, load and export work; writes fail with one line, changing nothing.
    """
    statements = open_registry().reader_grants(role, run=run)
    if as_json:
        emit_json({"role": role, "statements": statements, "ran": run})
        return
    for statement in statements:
        click.echo(statement)
    if run:
        say(f"granted {role} read-only access to the catalogue ({len(statements)} statements run)")
