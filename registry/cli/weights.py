"""The commands that move weights in and out: ``push`` and ``pull``.

Owns their options and what they print; reading the checkpoint, checking it against
the architecture, storing and verifying are :class:`registry.Registry`'s ``push`` and
``pull``.

Must never import torch, SQLAlchemy or the layers below the API (``catalog``,
``storage``, ``architectures``) at module level; the API is reached through
``app.open_registry``.
"""

from __future__ import annotations

import os
from typing import Any

import click

from .. import _format
from ..errors import InvalidArgumentError
from .app import Command, open_registry
from .output import emit_json, progress, say
from .params import ARCH_ARG, NAME, REF, json_option, pairs_to_dict, tag_option


@click.command(cls=Command)
@click.argument("path")
@click.option(
    "--arch",
    help="Architecture: a name (see `registry archs`), package.module:Class, or "
    "timm:NAME; default: recognised from the weights.",
)
@click.option("--name", type=NAME, help="Model name (default: the file's stem).")
@tag_option("Label the version; repeatable.")
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
    with progress(as_json, "pushing") as bar:
        mv = open_registry().push(
            path,
            name,
            arch=arch,
            arch_kwargs=arch_args,
            tags=tags,
            description=description,
            parent=parent,
            strip_prefix=strip_prefix,
            progress=bar,
        )
    report = mv.pushed
    assert report is not None
    for note in report.notes:
        say(f"note: {note}")
    if as_json:
        emit_json(mv.to_dict(tensors=False))
        return
    say(_pushed_message(mv, report))
    click.echo(mv.ref)


def _pushed_message(mv: Any, report: Any) -> str:
    """What ``push`` says: the new version, or the one already holding these weights."""
    if report.created:
        return (
            f"pushed {mv.ref}: {mv.arch}, {_format.count(mv.param_count)} parameters, "
            f"{_format.size(mv.total_bytes)} in {mv.tensor_count} tensors; "
            f"wrote {_format.size(report.bytes_written)} ({report.tensors_written} new tensors)"
        )
    said = f"identical weights are already stored as {mv.ref}; no new version created"
    if report.changed:
        said += f"; added {', '.join(report.changed)}"
    if report.healed:
        said += f"; wrote {_format.size(report.bytes_written)} to heal its damaged tensors"
    return said


@click.command(cls=Command)
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
    # The API works out where the file goes too; the CLI repeats it (pull_target) to
    # say beforehand whether it replaces a file and which folders it creates.
    from .._files import pull_target

    try:
        pull_target(output, fmt, "x")  # a --format the file name contradicts is bad usage
    except InvalidArgumentError as exc:
        raise click.BadParameter(
            exc.cli_message.removeprefix("--format "), param_hint="'--format'"
        ) from None
    reg = open_registry()
    mv = reg.get(ref)
    target, fmt = pull_target(output, fmt, f"{mv.name.replace('/', '-')}-v{mv.version}")
    replacing = force and os.path.lexists(target)
    new_folders = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    with progress(as_json, "pulling") as bar:
        path = reg.pull(
            mv.ref, output, format=fmt, overwrite=force, progress=bar
        )  # the exact version, even if `ref` moves meanwhile
    if as_json:
        emit_json(
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
        say(f"created the folder {new_folders[0]}")
    verified = f"({_format.size(mv.total_bytes)}, {mv.tensor_count} tensors verified)"
    say(
        f"replaced {path} with {mv.ref} {verified}"
        if replacing
        else f"wrote {mv.ref} to {path} {verified}"
    )
    click.echo(str(path))
