"""``registry cache``: what the local read cache of an object store holds, and freeing it.

Loads, pulls and exports from an ``s3://`` store keep the byte ranges they fetched in a
local cache (``REGISTRY_CACHE_DIR``, else ``REGISTRY_HOME/cache``), bounded by
``REGISTRY_CACHE_MAX_SIZE``. The cache is only ever a copy: clearing it loses nothing.

Must never import torch, SQLAlchemy or the layers below the API at module level.
"""

from __future__ import annotations

import click

from .. import _format
from .app import Command, Group, open_registry
from .output import emit_json, say
from .params import json_option


@click.group(cls=Group)
def cache() -> None:
    """The local read cache of an object store (info, prune, clear)."""


@cache.command(cls=Command)
@json_option
def info(as_json: bool) -> None:
    """Where the cache is, how much it holds and its bound."""
    found = open_registry().cache_info()
    if as_json:
        emit_json(found.to_dict())
        return
    click.echo(f"cache:    {found.path}")
    click.echo(f"holds:    {_format.size(found.nbytes)} in {found.packs} packs")
    click.echo(f"bound:    {_format.size(found.max_bytes)} (REGISTRY_CACHE_MAX_SIZE)")
    for store in found.stores:
        click.echo(f"store:    {store}")


@cache.command(cls=Command)
@click.option(
    "--max-size",
    metavar="SIZE",
    help="Keep at most SIZE (e.g. 10GB, 500MB, 0); default: REGISTRY_CACHE_MAX_SIZE.",
)
@json_option
def prune(max_size: str | None, as_json: bool) -> None:
    """Remove the least recently used packs until the cache fits its bound."""
    from ..config import parse_size

    limit = None
    if max_size is not None:
        try:
            limit = parse_size(max_size)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--max-size'") from None
    removed, freed = open_registry().prune_cache(limit)
    if as_json:
        emit_json({"packs_removed": removed, "bytes_freed": freed})
        return
    say(f"removed {removed} cached packs, freed {_format.size(freed)}")


@cache.command(cls=Command)
@json_option
def clear(as_json: bool) -> None:
    """Remove everything from the cache (it is only ever a copy)."""
    removed, freed = open_registry().clear_cache()
    if as_json:
        emit_json({"packs_removed": removed, "bytes_freed": freed})
        return
    say(f"removed {removed} cached packs, freed {_format.size(freed)}")
