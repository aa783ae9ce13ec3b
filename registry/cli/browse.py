"""The commands that look without changing anything: ``list``, ``models``, ``show``,
``diff`` and ``log``.

Owns their filters and options and how their answers read: the version table, ``show``'s
fields and tensor table, the diff table, the history table. The answers themselves
(which versions, which events, what differs) are :class:`registry.Registry`'s.

Every stored value is shown through ``_format.printable`` (tables do it per cell): a
tag value, description, path or tensor name holding a newline, an escape sequence or a
right-to-left override is shown escaped on its own line or cell, never as a new row or
a raw control byte; ``--json`` gives the values exactly. Free-text cells of the
``list`` and ``log`` tables are cut at ``CELL_LIMIT`` characters; ``show`` and
``--json`` give them whole.

Must never import torch, SQLAlchemy or the layers below the API: ``list``, ``show``
and ``log`` are catalogue-only and answer without loading either.
"""

from __future__ import annotations

from typing import Any

import click

from .. import _format
from .app import Command, open_registry
from .output import emit_json, say
from .params import REF, filter_options, json_option, page_options

#: The longest cell (in characters) of the ``list`` and ``log`` tables.
CELL_LIMIT = 1000


@click.command(cls=Command, name="list")
@filter_options("versions")
@click.option(
    "--sort",
    type=click.Choice(["created", "name", "size", "params"]),
    default="created",
    show_default=True,
    help="Order: newest, by name and version, largest, most parameters.",
)
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@page_options("versions")
@json_option
def list_(
    name: str | None,
    tags: dict[str, str],
    arch: str | None,
    since: str | None,
    before: str | None,
    sort: str,
    reverse: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List versions, newest first; NAME may be a glob such as 'res*'."""
    reg = open_registry()
    filters = {"tags": tags, "arch": arch, "since": since, "before": before}
    versions = reg.list(
        name, **filters, sort=sort, reverse=reverse, limit=limit or None, offset=offset
    )
    if as_json:
        emit_json([mv.to_dict(tensors=False) for mv in versions])
        return
    if not versions:
        total = reg.count(name, **filters) if offset else 0
        if total:
            say(f"no versions past the first {offset:,}: {total:,} match in all")
        else:
            say("no versions" + (f" of {name}" if name else "") + " match")
        return
    click.echo(_versions_table(versions))
    if limit and (len(versions) == limit or offset):
        total = reg.count(name, **filters)
        if total > len(versions):
            say(
                f"showing {offset + 1:,}-{offset + len(versions):,} of {total:,}; "
                "use --limit/--offset for more"
            )


def _versions_table(versions: list[Any]) -> str:
    rows = [
        [
            mv.ref,
            mv.arch,
            _format.count(mv.param_count),
            _format.size(mv.total_bytes),
            mv.digest[:12],
            _format.when(mv.created_at),
            " ".join([f"@{a}" for a in mv.aliases] + [f"{k}={v}" for k, v in mv.tags.items()]),
        ]
        for mv in versions
    ]
    return _format.table(
        ["REF", "ARCH", "PARAMS", "SIZE", "DIGEST", "CREATED", "TAGS"],
        rows,
        right=(2, 3),
        limit=CELL_LIMIT,
    )


@click.command(cls=Command)
@filter_options("models with a version")
@click.option(
    "--sort",
    type=click.Choice(["latest", "name", "versions", "size"]),
    default="latest",
    show_default=True,
    help="Order: last push first, by name, most versions, largest latest version.",
)
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@page_options("models")
@json_option
def models(
    name: str | None,
    tags: dict[str, str],
    arch: str | None,
    since: str | None,
    before: str | None,
    sort: str,
    reverse: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List model names: latest version, number of versions, aliases, last push."""
    reg = open_registry()
    filters = {"tags": tags, "arch": arch, "since": since, "before": before}
    found = reg.models(
        name, **filters, sort=sort, reverse=reverse, limit=limit or None, offset=offset
    )
    if as_json:
        emit_json([summary.to_dict() for summary in found])
        return
    if not found:
        say("no models" + (f" named {name}" if name else "") + " match")
        return
    rows = [
        [
            s.name,
            str(s.versions),
            s.latest.ref,
            s.latest.arch,
            _format.size(s.latest.total_bytes),
            _format.when(s.last_pushed_at),
            " ".join(f"@{a}={v}" for a, v in s.aliases.items()),
        ]
        for s in found
    ]
    headers = ["MODEL", "VERSIONS", "LATEST", "ARCH", "SIZE", "LAST PUSH", "ALIASES"]
    click.echo(_format.table(headers, rows, right=(1, 4), limit=CELL_LIMIT))
    if limit and (len(found) == limit or offset):
        total = reg.count_models(name, **filters)
        if total > len(found):
            say(f"showing {offset + 1:,}-{offset + len(found):,} of {total:,} models")


@click.command(cls=Command)
@click.argument("ref", type=REF)
@json_option
def show(ref: str, as_json: bool) -> None:
    """Show a version's metadata and its tensor table."""
    reg = open_registry()
    mv = reg.get(ref)
    if as_json:
        emit_json(mv.to_dict())
        return
    fields = _show_fields(mv, reg.lineage(mv.ref) if mv.parent else [])
    width = max(len(k) for k, _ in fields)
    lines = [_format.printable(mv.ref)]
    lines += [f"  {k.ljust(width)}  {_format.printable(v)}" for k, v in fields]
    click.echo("\n".join(lines) + "\n\n" + _tensor_table(mv))


def _show_fields(mv: Any, lineage: list[Any]) -> list[tuple[str, str]]:
    """``show``'s metadata lines, in order; ``lineage`` is the version and its ancestors."""
    from ..keyvalue import format_kwargs

    fields = [
        ("digest", f"sha256:{mv.digest}"),
        ("arch", f"{mv.arch}({format_kwargs(mv.arch_kwargs)})"),
        *([("registered by", f"module {mv.arch_module}")] if mv.arch_module else []),
        ("created", _format.when(mv.created_at)),
        *_provenance_fields(mv),
        ("size", f"{_format.size(mv.total_bytes)} in {mv.tensor_count} tensors"),
        ("parameters", f"{_format.count(mv.param_count)} ({mv.param_count:,})"),
        ("torch", mv.torch_version),
        ("source", mv.source_format),
    ]
    if mv.aliases:
        fields.append(("aliases", ", ".join(mv.aliases)))
    if mv.tags:
        fields.append(("tags", ", ".join(f"{k}={v}" for k, v in mv.tags.items())))
    if lineage:
        fields.append(("lineage", " <- ".join(v.ref for v in lineage)))
    if mv.description:
        fields.append(("description", mv.description))
    return fields


def _provenance_fields(mv: Any) -> list[tuple[str, str]]:
    """``show``'s lines on where a version came from: who pushed it, and an import."""
    fields = []
    if mv.pushed_by:
        who = f"{mv.pushed_by}@{mv.pushed_host}" if mv.pushed_host else mv.pushed_by
        line = f"{_format.when(mv.origin_created_at or mv.created_at)} by {who}"
        if mv.source_path:
            line += f" from {mv.source_path}"
        if mv.git_commit:
            line += f" (git {mv.git_commit[:12]}{', dirty' if mv.git_dirty else ''})"
        fields.append(("pushed", line))
    if mv.origin_created_at is not None:
        fields.append(
            (
                "imported",
                f"{_format.when(mv.created_at)} "
                f"(originally created {_format.when(mv.origin_created_at)})",
            )
        )
    return fields


def _tensor_table(mv: Any) -> str:
    """``show``'s tensor table; tied weights get a column saying what they share with."""
    rows = [
        [t.name, t.dtype, _format.shape(t.shape), _format.size(t.nbytes), t.digest[:12]]
        for t in mv.tensors
    ]
    headers = ["TENSOR", "DTYPE", "SHAPE", "SIZE", "DIGEST"]
    if any(t.shared is not None for t in mv.tensors):
        headers.append("STORAGE")
        for row, t in zip(rows, mv.tensors):
            first = mv.tensors[t.shared.group].name if t.shared is not None else None
            row.append(f"shared with {first}" if first not in (None, t.name) else "")
    return _format.table(headers, rows, right=(3,))


@click.command(cls=Command)
@click.argument("a", type=REF, metavar="REF_A")
@click.argument("b", type=REF, metavar="REF_B")
@json_option
def diff(a: str, b: str, as_json: bool) -> None:
    """Compare the tensors of two versions (B against A)."""
    result = open_registry().diff(a, b)
    if as_json:
        emit_json(result.to_dict())
        return
    rows = [["added", t.name, _format.shape(t.shape), t.dtype, ""] for t in result.added]
    rows += [["removed", t.name, _format.shape(t.shape), t.dtype, ""] for t in result.removed]
    rows += [
        ["reshaped", n, f"{_format.shape(sa)} -> {_format.shape(sb)}", "", ""]
        for n, sa, sb in result.reshaped
    ]
    rows += [["dtype", n, "", f"{da} -> {db}", ""] for n, da, db in result.dtype_changed]
    rows += [
        ["changed", c.name, "", "", f"max |d| {c.max_abs_diff:.3g}, rel L2 {c.rel_l2:.3g}"]
        for c in result.changed
    ]
    if rows:
        click.echo(_format.table(["CHANGE", "TENSOR", "SHAPE", "DTYPE", "DIFFERENCE"], rows))
    click.echo(f"{result.a} -> {result.b}: {result.summary()}")


@click.command(cls=Command)
@click.argument("ref", required=False, type=REF, metavar="[NAME|REF]")
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True,
    help="Show at most N events, the newest (0: all).",
)  # fmt: skip
@json_option
def log(ref: str | None, limit: int, as_json: bool) -> None:
    """Show the history, newest first: who pushed each version and every later change
    (tags, aliases, descriptions, removals, imports), when and from what to what.

    Without an argument, the whole registry's; NAME: that model's (removed versions
    included); REF (NAME:3, NAME:ALIAS, NAME@sha256:HEX): that version's.
    """
    events = open_registry().log(ref, limit=limit + 1 if limit else None)
    shown = events[:limit] if limit else events
    if as_json:
        emit_json([event.to_dict() for event in shown])
        return
    if not shown:
        say("no history" + (f" for {ref}" if ref else " yet"))
        return
    rows = [
        [
            _format.when(e.at),
            f"{e.actor}@{e.host}" if e.host else e.actor,
            e.kind,
            e.ref,
            e.summary(),
        ]
        for e in shown
    ]
    click.echo(_format.table(["WHEN", "WHO", "WHAT", "REF", "CHANGE"], rows, limit=CELL_LIMIT))
    if limit and len(events) > limit:
        say(
            f"showing the newest {limit:,} event{'s' if limit != 1 else ''}; "
            "use --limit N for more (0: all)"
        )
