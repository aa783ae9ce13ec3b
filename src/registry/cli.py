"""The ``registry`` command: a thin click layer over :class:`registry.Registry`.

Results go to stdout (JSON with ``--json``); human messages go to stderr. A
:class:`RegistryError` becomes a one-line ``Error: ...`` and exit code 1; bad usage
exits with 2 (click's convention).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import _format
from .errors import RegistryError

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)


class _Group(click.Group):
    """Turns registry and database errors into one-line messages with exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise click.ClickException(
                f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            ) from None
        except Exception as exc:
            # Only a command that went through SQLAlchemy can raise its errors; checking
            # sys.modules keeps the others from importing it just to catch nothing.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
                detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
                raise click.ClickException(f"catalogue database error: {detail}") from None
            raise


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
    "--arch", required=True, help="Architecture name, e.g. resnet18 (see `registry archs`)."
)
@click.option("--name", help="Model name (default: the file's stem).")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Label the version; repeatable.")
@click.option(
    "--arch-arg",
    "arch_args",
    multiple=True,
    metavar="K=V",
    help="Constructor argument, e.g. num_classes=10 (JSON values); repeatable.",
)
@click.option("--description", help="Free text stored with the version.")
@json_option
def push(
    path: str,
    arch: str,
    name: str | None,
    tags: tuple[str, ...],
    arch_args: tuple[str, ...],
    description: str | None,
    as_json: bool,
) -> None:
    """Store the state dict in PATH (.pth or .safetensors) as a new version."""
    from .keyvalue import parse_arch_args, parse_tags

    kwargs = parse_arch_args(arch_args)
    labels = parse_tags(tags)
    mv = _registry().push(
        path, name, arch=arch, arch_kwargs=kwargs, tags=labels, description=description
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
        _say(f"identical weights are already stored as {mv.ref}; no new version created")
    click.echo(mv.ref)


@cli.command()
@click.argument("ref")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=str),
    help="File to write (default: NAME-vVERSION.pth in the current folder).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["pth", "safetensors"]),
    help="File format (default: from the output's suffix, else pth).",
)
@json_option
def pull(ref: str, output: str | None, fmt: str | None, as_json: bool) -> None:
    """Write the weights of REF to a file that torch.load reads (digests verified)."""
    reg = _registry()
    mv = reg.get(ref)
    path = reg.pull(mv.ref, output, format=fmt)  # the exact version, even if `ref` moves meanwhile
    if as_json:
        _emit_json(
            {
                "ref": mv.ref,
                "path": str(path),
                "format": fmt or _guess_format(path.name),
                "digest": f"sha256:{mv.digest}",
                "total_bytes": mv.total_bytes,
            }
        )
        return
    _say(
        f"wrote {mv.ref} to {path} ({_format.size(mv.total_bytes)}, {mv.tensor_count} tensors verified)"
    )
    click.echo(str(path))


def _guess_format(filename: str) -> str:
    return "safetensors" if filename.endswith(".safetensors") else "pth"


@cli.command(name="list")
@click.argument("name", required=False)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="K=V",
    help="Only versions with this tag; repeatable (ANDed).",
)
@json_option
def list_(name: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List versions, newest first."""
    from .keyvalue import parse_tags

    versions = _registry().list(name, parse_tags(tags))
    if as_json:
        _emit_json([mv.to_dict(tensors=False) for mv in versions])
        return
    if not versions:
        _say("no versions" + (f" of {name}" if name else "") + " in the registry")
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


@cli.command()
@click.argument("ref")
@json_option
def show(ref: str, as_json: bool) -> None:
    """Show a version's metadata and its tensor table."""
    mv = _registry().get(ref)
    if as_json:
        _emit_json(mv.to_dict())
        return
    from .keyvalue import format_kwargs

    fields = [
        ("digest", f"sha256:{mv.digest}"),
        ("arch", f"{mv.arch}({format_kwargs(mv.arch_kwargs)})"),
        ("created", _format.when(mv.created_at)),
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
        fields.append(("parent", mv.parent))
    if mv.description:
        fields.append(("description", mv.description))
    width = max(len(k) for k, _ in fields)
    lines = [mv.ref] + [f"  {k.ljust(width)}  {v}" for k, v in fields]
    rows = [
        [t.name, t.dtype, _format.shape(t.shape), _format.size(t.nbytes), t.digest[:12]]
        for t in mv.tensors
    ]
    table = _format.table(["TENSOR", "DTYPE", "SHAPE", "SIZE", "DIGEST"], rows, right=(3,))
    click.echo("\n".join(lines) + "\n\n" + table)


@cli.command()
@click.argument("ref")
@click.argument("tags", nargs=-1, required=True, metavar="K=V...")
@json_option
def tag(ref: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Add or change tags of REF (metadata only: the weights never change)."""
    from .keyvalue import parse_tags

    mv = _registry().tag(ref, parse_tags(tags))
    _show_tags(mv, as_json)


@cli.command()
@click.argument("ref")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@json_option
def untag(ref: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Remove tags from REF by key."""
    mv = _registry().untag(ref, keys)
    _show_tags(mv, as_json)


def _show_tags(mv: Any, as_json: bool) -> None:
    if as_json:
        _emit_json(mv.to_dict(tensors=False))
        return
    labels = ", ".join(f"{k}={v}" for k, v in mv.tags.items()) or "no tags"
    _say(f"{mv.ref}: {labels}")
    click.echo(mv.ref)


@cli.command()
@json_option
def archs(as_json: bool) -> None:
    """List the architectures the registry can rebuild."""
    from . import architectures

    names = architectures.available()
    if as_json:
        _emit_json([{"name": n, "source": "torchvision"} for n in names])
        return
    click.echo(_format.table(["ARCH", "SOURCE"], [[n, "torchvision"] for n in names]))


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
