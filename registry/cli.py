"""The ``registry`` command: a thin click layer over :class:`registry.Registry`.

Results go to stdout (JSON with ``--json``); human messages go to stderr. A
:class:`RegistryError` becomes a one-line ``Error: ...`` and exit code 1; bad usage
exits with 2 (click's convention).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from . import _format
from .clitypes import ALIAS, ARCH_ARG, DATE, NAME, NAME_PATTERN, REF, TAG, TAG_KEY, pairs_to_dict
from .errors import RegistryError

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)


def _tag_option(help: str) -> Any:
    """A repeatable ``--tag K=V`` option whose value is a dict (one value per key)."""
    return click.option("--tag", "tags", type=TAG, multiple=True, callback=pairs_to_dict, help=help)


class _Command(click.Command):
    """A command that refuses an option given twice where it takes one value: click
    would keep the last and drop the other without a word."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        except click.UsageError:
            return super().parse_args(ctx, args)  # click says what is wrong
        seen: set[str | None] = set()
        for param in order:
            if isinstance(param, click.Option) and not (
                param.multiple or param.count or param.is_flag
            ):
                if param.name in seen:
                    raise click.BadParameter(
                        "given more than once: give it once", ctx=ctx, param=param
                    )
                seen.add(param.name)
        return super().parse_args(ctx, args)


class _Group(click.Group):
    """Turns registry and database errors into one-line messages with exit code 1."""

    command_class = _Command
    group_class = type  # subgroups (`registry db`) are of this class too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            raise click.ClickException(_one_line(exc.cli_message)) from None
        except OSError as exc:
            raise click.ClickException(
                _one_line(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
            ) from None
        except Exception as exc:
            # Only a command that went through SQLAlchemy can raise its errors; checking
            # sys.modules keeps the others from importing it just to catch nothing.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
                detail = _one_line(str(getattr(exc, "orig", None) or exc)).split("; ")[0]
                raise click.ClickException(f"catalogue database error: {detail}") from None
            raise


def _one_line(message: str) -> str:
    """A message on one line, whatever the library that wrote it put in it."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def _registry():  # type: ignore[no-untyped-def]
    from .api import Registry

    return Registry()


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def _say(message: str) -> None:
    click.echo(message, err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="registry", prog_name="registry")
def cli() -> None:
    """A model registry for PyTorch state dicts.

    Keeps every pushed state dict with its architecture, arguments, digest and tags
    (catalogue: REGISTRY_HOME or REGISTRY_DATABASE_URL) and rebuilds the module on
    load. REF is NAME, NAME:VERSION, NAME:latest, NAME:ALIAS or NAME@sha256:HEX.
    """


@cli.command()
@click.argument("path")
@click.option(
    "--arch",
    help="Architecture: a name (see `registry archs`), package.module:Class, or "
    "timm:NAME; default: recognised from the weights.",
)
@click.option("--name", type=NAME, help="Model name (default: the file's stem).")
@_tag_option("Label the version; repeatable.")
@click.option(
    "--arch-arg",
    "arch_args",
    type=ARCH_ARG,
    multiple=True,
    callback=pairs_to_dict,
    help="Constructor argument, e.g. num_classes=10 (JSON values); repeatable.",
)
@click.option("--description", help="Free text stored with the version.")
@click.option("--parent", type=REF, help="The version these weights were fine-tuned from.")
@click.option(
    "--strip-prefix",
    metavar="PREFIX",
    help="Remove PREFIX (e.g. 'module.') from every key; by default a wrapper's prefix "
    "is removed only where that makes the keys fit.",
)
@json_option
def push(
    path: str,
    arch: str | None,
    name: str | None,
    tags: dict[str, str],
    arch_args: dict[str, Any],
    description: str | None,
    parent: str | None,
    strip_prefix: str | None,
    as_json: bool,
) -> None:
    """Store the state dict in PATH (.pth or .safetensors) as a new version.

    The weights must be what torch's own load_state_dict(strict=True) into the
    architecture accepts; which keys were tied, the module versions (_metadata) and
    a safetensors file's metadata are kept with them.
    """
    with _progress(as_json, "pushing") as progress:
        mv = _registry().push(
            path,
            name,
            arch=arch,
            arch_kwargs=arch_args,
            tags=tags,
            description=description,
            parent=parent,
            strip_prefix=strip_prefix,
            progress=progress,
        )
    report = mv.pushed
    assert report is not None
    for note in report.notes:
        _say(f"note: {note}")
    if as_json:
        _emit_json(mv.to_dict(tensors=False))
        return
    if report.created:
        _say(
            f"pushed {mv.ref}: {mv.arch}, {_format.count(mv.param_count)} parameters, "
            f"{_format.size(mv.total_bytes)} in {mv.tensor_count} tensors; "
            f"wrote {_format.size(report.bytes_written)} ({report.tensors_written} new tensors)"
        )
    else:
        said = f"identical weights are already stored as {mv.ref}; no new version created"
        if report.changed:
            said += f"; added {', '.join(report.changed)}"
        if report.healed:
            said += f"; wrote {_format.size(report.bytes_written)} to heal its damaged tensors"
        _say(said)
    click.echo(mv.ref)


@cli.command()
@click.argument("ref", type=REF)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=str),
    help="File or folder to write (default: NAME-vVERSION.pth in the current folder; "
    "a folder, or a path ending in '/', gets that name inside it).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pth", "safetensors"]),
    help="File format (default: from the output's suffix, else pth).",
)
@click.option("--force", is_flag=True, help="Replace the output file if it exists.")
@json_option
def pull(ref: str, output: str | None, fmt: str | None, force: bool, as_json: bool) -> None:
    """Write the weights of REF to a file that torch.load reads (digests verified).

    An existing file is never replaced without --force.
    """
    from ._files import pull_target
    from .errors import InvalidArgumentError

    try:
        pull_target(output, fmt, "x")  # a --format the file name contradicts is bad usage
    except InvalidArgumentError as exc:
        raise click.BadParameter(
            exc.cli_message.removeprefix("--format "), param_hint="'--format'"
        ) from None
    reg = _registry()
    mv = reg.get(ref)
    target, fmt = pull_target(output, fmt, f"{mv.name.replace('/', '-')}-v{mv.version}")
    replacing = force and os.path.lexists(target)
    new_folders = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    with _progress(as_json, "pulling") as progress:
        path = reg.pull(
            mv.ref, output, format=fmt, overwrite=force, progress=progress
        )  # the exact version, even if `ref` moves meanwhile
    if as_json:
        _emit_json(
            {
                "ref": mv.ref,
                "path": str(path),
                "format": fmt,
                "digest": f"sha256:{mv.digest}",
                "total_bytes": mv.total_bytes,
                "replaced": bool(replacing),
                "created_folders": [str(p) for p in reversed(new_folders)],
            }
        )
        return
    if new_folders:
        _say(f"created the folder {new_folders[0]}")
    _say(
        f"replaced {path} with {mv.ref} ({_format.size(mv.total_bytes)}, {mv.tensor_count} "
        "tensors verified)"
        if replacing
        else f"wrote {mv.ref} to {path} ({_format.size(mv.total_bytes)}, {mv.tensor_count} "
        "tensors verified)"
    )
    click.echo(str(path))


@cli.command(name="list")
@click.argument("name", required=False, type=NAME_PATTERN, metavar="[NAME|GLOB]")
@_tag_option("Only versions with this tag; repeatable (ANDed).")
@click.option("--arch", help="Only versions of this architecture.")
@click.option("--since", type=DATE, help="Created at or after DATE (ISO 8601, UTC).")
@click.option("--before", type=DATE, help="Created before DATE (ISO 8601, UTC).")
@click.option(
    "--sort",
    type=click.Choice(["created", "name", "size", "params"]),
    default="created",
    show_default=True,
    help="Order: newest, by name and version, largest, most parameters.",
)
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=100, show_default=True,
    help="Show at most N versions (0: all).",
)  # fmt: skip
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip the first N.")
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
    reg = _registry()
    filters = {"tags": tags, "arch": arch, "since": since, "before": before}
    versions = reg.list(
        name, **filters, sort=sort, reverse=reverse, limit=limit or None, offset=offset
    )
    if as_json:
        _emit_json([mv.to_dict(tensors=False) for mv in versions])
        return
    if not versions:
        total = reg.count(name, **filters) if offset else 0
        if total:
            _say(f"no versions past the first {offset:,}: {total:,} match in all")
        else:
            _say("no versions" + (f" of {name}" if name else "") + " match")
        return
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
    click.echo(
        _format.table(
            ["REF", "ARCH", "PARAMS", "SIZE", "DIGEST", "CREATED", "TAGS"], rows, right=(2, 3)
        )
    )
    if limit and (len(versions) == limit or offset):
        total = reg.count(name, **filters)
        if total > len(versions):
            _say(
                f"showing {offset + 1:,}-{offset + len(versions):,} of {total:,}; "
                "use --limit/--offset for more"
            )


@cli.command()
@click.argument("ref", type=REF)
@json_option
def show(ref: str, as_json: bool) -> None:
    """Show a version's metadata and its tensor table."""
    reg = _registry()
    mv = reg.get(ref)
    if as_json:
        _emit_json(mv.to_dict())
        return
    from .keyvalue import format_kwargs

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
    if mv.parent:
        chain = reg.lineage(mv.ref)
        fields.append(("lineage", " <- ".join(v.ref for v in chain)))
    if mv.description:
        fields.append(("description", mv.description))
    width = max(len(k) for k, _ in fields)
    lines = [mv.ref] + [f"  {k.ljust(width)}  {v}" for k, v in fields]
    rows = [
        [t.name, t.dtype, _format.shape(t.shape), _format.size(t.nbytes), t.digest[:12]]
        for t in mv.tensors
    ]
    headers = ["TENSOR", "DTYPE", "SHAPE", "SIZE", "DIGEST"]
    if any(t.shared is not None for t in mv.tensors):  # tied weights: say with what
        headers.append("STORAGE")
        for row, t in zip(rows, mv.tensors):
            first = mv.tensors[t.shared.group].name if t.shared is not None else None
            row.append(f"shared with {first}" if first not in (None, t.name) else "")
    table = _format.table(headers, rows, right=(3,))
    click.echo("\n".join(lines) + "\n\n" + table)


@cli.command()
@click.argument("ref", type=REF)
@click.argument("tags", nargs=-1, required=True, type=TAG, callback=pairs_to_dict, metavar="K=V...")
@json_option
def tag(ref: str, tags: dict[str, str], as_json: bool) -> None:
    """Add or change tags of REF (metadata only: the weights never change)."""
    mv = _registry().tag(ref, tags)
    old = mv.change.before if mv.change is not None else {}
    changes = [
        f"{k}: {old[k]} -> {v}" if k in old else f"{k}={v}"
        for k, v in (mv.change.after if mv.change is not None else {}).items()
    ]
    _show_tags(mv, as_json, "set " + ", ".join(changes) if changes else "no change")


@cli.command()
@click.argument("ref", type=REF)
@click.argument("keys", nargs=-1, required=True, type=TAG_KEY, metavar="KEY...")
@json_option
def untag(ref: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Remove tags from REF by key."""
    mv = _registry().untag(ref, keys)
    assert mv.change is not None  # a key it lacks is an error
    _show_tags(mv, as_json, "removed " + ", ".join(f"{k}={v}" for k, v in mv.change.before.items()))


def _show_tags(mv: Any, as_json: bool, change: str) -> None:
    if as_json:
        _emit_json(mv.to_dict(tensors=False))
        return
    labels = ", ".join(f"{k}={v}" for k, v in mv.tags.items()) or "none"
    _say(f"{mv.ref}: {change}; its tags: {labels}")
    click.echo(mv.ref)


@cli.command()
@click.argument("ref", required=False, type=REF)
@click.argument("alias_name", required=False, type=ALIAS, metavar="ALIAS")
@click.option(
    "--delete", "delete", type=REF, metavar="NAME:ALIAS", help="Delete this alias instead."
)
@json_option
def alias(ref: str | None, alias_name: str | None, delete: str | None, as_json: bool) -> None:
    """Point ALIAS (e.g. production) of REF's model at REF, moving it if it was elsewhere."""
    reg = _registry()
    if delete:
        if ref or alias_name:
            raise click.UsageError("give either REF ALIAS or --delete NAME:ALIAS")
        mv = reg.unalias(delete)
        message = f"deleted {delete} (it pointed at {mv.ref})"
    else:
        if not (ref and alias_name):
            raise click.UsageError("give REF ALIAS, or --delete NAME:ALIAS")
        mv = reg.alias(ref, alias_name)
        message = f"{mv.name}:{alias_name} -> {mv.ref}"
        if mv.change is None:
            message += " (already)"
        elif mv.change.before is not None:
            message += f" (moved from {mv.name}:{mv.change.before['version']})"
    if as_json:
        _emit_json(mv.to_dict(tensors=False))
        return
    _say(message)
    click.echo(mv.ref)


@cli.command()
@click.argument("ref", type=REF)
@click.argument("text", required=False)
@click.option("--clear", is_flag=True, help="Remove the description.")
@json_option
def describe(ref: str, text: str | None, clear: bool, as_json: bool) -> None:
    """Set the description of REF."""
    if (text is None) == (not clear):
        raise click.UsageError("give TEXT, or --clear")
    mv = _registry().describe(ref, None if clear else text)
    if as_json:
        _emit_json(mv.to_dict(tensors=False))
        return
    was = mv.change.before["description"] if mv.change is not None else None
    if mv.change is None:
        _say(f"{mv.ref}: description unchanged")
    elif mv.description is None:
        _say(f"{mv.ref}: description cleared (it was {was!r})")
    elif was is None:
        _say(f"{mv.ref}: description set")
    else:
        _say(f"{mv.ref}: description replaced (it was {was!r})")
    click.echo(mv.ref)


@cli.command()
@click.argument("a", type=REF, metavar="REF_A")
@click.argument("b", type=REF, metavar="REF_B")
@json_option
def diff(a: str, b: str, as_json: bool) -> None:
    """Compare the tensors of two versions (B against A)."""
    result = _registry().diff(a, b)
    if as_json:
        _emit_json(result.to_dict())
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


@cli.command(name="rm")
@click.argument("ref", type=REF)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also delete the aliases that point at it.")
@json_option
def rm(ref: str, yes: bool, force: bool, as_json: bool) -> None:
    """Delete a version (its tensors stay until `registry gc`).

    A version an alias points at needs --force, which deletes the alias too; versions
    whose parent it is lose their parent. Both are said before and after.
    """
    reg = _registry()
    mv = reg.get(ref)
    children = [c.ref for c in reg.children(mv.ref)]
    aliases = [f"{mv.name}:{a}" for a in mv.aliases]
    consequences = []
    if aliases and force:
        consequences.append(f"deletes {_join(aliases)}")
    if children:
        consequences.append(f"leaves {_join(children)} without a parent")
    if aliases and not force:
        reg.remove(mv.ref)  # refused before asking, with the message that says what to do
    if not yes:
        question = f"delete {mv.ref}" + (f" ({'; '.join(consequences)})" if consequences else "")
        try:
            answer = click.confirm(f"{question}?", err=True)
        except click.Abort:  # no terminal to answer on
            raise click.ClickException(
                "nothing deleted: no answer to the question (use --yes to delete without asking)"
            ) from None
        if not answer:
            raise click.ClickException("nothing deleted")
    removed = reg.remove(mv.ref, force=force)
    if as_json:
        _emit_json(
            {
                **removed.to_dict(tensors=False),
                "aliases_deleted": aliases,
                "children_without_parent": children,
            }
        )
        return
    said = f"deleted {removed.ref}"
    if aliases:
        said += f" and {_join(aliases)}"
    if children:
        said += f"; {_join(children)} {'has' if len(children) == 1 else 'have'} no parent now"
    _say(f"{said}; run `registry gc` to free tensors no other version uses")
    click.echo(removed.ref)


def _join(items: list[str]) -> str:
    return ", ".join(items)


@cli.command()
@click.option("--dry-run", is_flag=True, help="Only say what would be freed.")
@json_option
def gc(dry_run: bool, as_json: bool) -> None:
    """Delete stored tensors that no version uses any more."""
    report = _registry().gc(dry_run=dry_run)
    if as_json:
        _emit_json(report.to_dict())
        return
    verb = "would free" if dry_run else "freed"
    _say(
        f"{verb} {_format.size(report.bytes_freed)}: {report.blobs_removed} unused tensors, "
        f"{report.packs_removed} packs deleted, {report.packs_rewritten} rewritten"
        + (f", {report.orphan_files_removed} leftover files" if report.orphan_files_removed else "")
    )
    click.echo(report.bytes_freed)


@cli.command()
@click.argument("ref", required=False, type=REF)
@json_option
def verify(ref: str | None, as_json: bool) -> None:
    """Re-hash stored tensors (of REF, or all) and report corrupt or missing ones."""
    report = _registry().verify(ref)
    if as_json:
        _emit_json(report.to_dict())
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
        _say(f"checked {report.checked} {scope} ({_format.size(report.checked_bytes)}): {verdict}")
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.argument("refs", nargs=-1, required=True, type=REF, metavar="REF...")
@click.option("-o", "--output", required=True, type=click.Path(), help="Bundle file to write.")
@click.option("--force", is_flag=True, help="Replace the bundle file if it exists.")
@json_option
def export(refs: tuple[str, ...], output: str, force: bool, as_json: bool) -> None:
    """Write versions and their tensors to a self-contained tar bundle."""
    replacing = force and os.path.lexists(output)
    with _progress(as_json, "exporting") as progress:
        report = _registry().export(list(refs), output, overwrite=force, progress=progress)
    if as_json:
        _emit_json({**report.to_dict(), "replaced": bool(replacing)})
        return
    _say(
        f"exported {', '.join(report.versions)}: {report.tensors} tensors "
        f"({report.blobs} distinct), "
        f"{_format.size(report.bytes)}"
        + ("; replaced the file that was there" if replacing else "")
    )
    click.echo(report.path)


@cli.command(name="import")
@click.argument("path", type=click.Path(dir_okay=False))
@json_option
def import_(path: str, as_json: bool) -> None:
    """Add the versions of a bundle written by `registry export`."""
    with _progress(as_json, "importing") as progress:
        report = _registry().import_bundle(path, progress=progress)
    if as_json:
        _emit_json(report.to_dict())
        return
    for note in report.notes:
        _say(f"note: {note}")
    reg = _registry()
    for source, target, created in report.versions:
        if not created:
            _say(f"{source}: already here as {target}")
            continue
        mv = reg.get(target)
        labels = [f"@{a}" for a in mv.aliases] + [f"{k}={v}" for k, v in mv.tags.items()]
        _say(f"{source}: imported as {target}" + (f" ({' '.join(labels)})" if labels else ""))
    _say(
        f"wrote {_format.size(report.bytes_written)} "
        f"({report.tensors_written} stored tensors new to this registry)"
    )
    for _source, target, _created in report.versions:
        click.echo(target)


@cli.command()
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
    events = _registry().log(ref, limit=limit + 1 if limit else None)
    shown = events[:limit] if limit else events
    if as_json:
        _emit_json([event.to_dict() for event in shown])
        return
    if not shown:
        _say("no history" + (f" for {ref}" if ref else " yet"))
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
    click.echo(_format.table(["WHEN", "WHO", "WHAT", "REF", "CHANGE"], rows))
    if limit and len(events) > limit:
        _say(
            f"showing the newest {limit:,} event{'s' if limit != 1 else ''}; "
            "use --limit N for more (0: all)"
        )


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


class _Bar:
    """A byte-counting progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, label: str):
        self._label, self._done, self._last = label, 0, 0.0

    def __call__(self, nbytes: int) -> None:
        import time

        self._done += nbytes
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            click.echo(f"\r{self._label} {_format.size(self._done)}", nl=False, err=True)

    def finish(self) -> None:
        if self._last:
            click.echo(f"\r{self._label} {_format.size(self._done)}", err=True)


@contextmanager
def _progress(as_json: bool, label: str) -> Iterator[Any]:
    if as_json or not sys.stderr.isatty():
        yield None
        return
    bar = _Bar(label)
    try:
        yield bar
    finally:
        bar.finish()


@cli.command()
@click.argument("path")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
@json_option
def identify(path: str, top: int, as_json: bool) -> None:
    """Name the architectures whose keys and shapes best fit the weights in PATH."""
    matches = _registry().identify(path, limit=top)
    if as_json:
        _emit_json([m.to_dict() for m in matches])
        if not matches:  # the same exit code as without --json
            sys.exit(1)
        return
    if not matches:
        raise click.ClickException(
            "no known architecture shares any key and shape with these weights"
        )
    from .keyvalue import format_kwargs

    rows = [
        [f"{m.score:.0%}", f"{m.name}({format_kwargs(m.arch_kwargs)})", m.source] for m in matches
    ]
    click.echo(_format.table(["SCORE", "ARCH", "SOURCE"], rows, right=(0,)))


@cli.command()
@json_option
def archs(as_json: bool) -> None:
    """List the architectures the registry can rebuild by name, and where each comes from.

    Also accepted wherever an architecture is asked for: package.module:Class
    import paths, and timm:NAME when timm is installed.
    """
    from . import architectures

    found = architectures.available()
    if as_json:
        _emit_json([{"name": n, "source": source} for n, source in found])
        return
    click.echo(_format.table(["ARCH", "SOURCE"], [[n, source] for n, source in found]))


@cli.group()
def db() -> None:
    """Manage the catalogue database schema."""


@db.command()
@json_option
def upgrade(as_json: bool) -> None:
    """Apply pending schema migrations to the catalogue database."""
    before, after = _registry().upgrade_database()
    if as_json:
        _emit_json({"before": before, "after": after})
        return
    if before == after:
        _say(f"database schema is up to date (revision {after})")
    else:
        _say(f"upgraded database schema from {before or 'empty'} to {after}")
    click.echo(after)


@db.command()
@json_option
def current(as_json: bool) -> None:
    """Print the catalogue database's schema revision and the one this release needs."""
    from .catalog.schema import SCHEMA_REVISION

    revision = _registry().database_revision()
    if as_json:
        _emit_json(
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


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="registry")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
