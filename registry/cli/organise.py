"""The commands that organise versions without touching their weights: ``tag``,
``untag``, ``alias``, ``describe`` and ``rm``.

Owns their arguments, ``rm``'s question, and the messages that say what changed; the
changes themselves (and the refusals) are :class:`registry.Registry`'s.

Must never import torch, SQLAlchemy or the layers below the API: these are
catalogue-only commands and answer without loading either.
"""

from __future__ import annotations

from typing import Any

import click

from .app import Command, open_registry
from .output import emit_json, say
from .params import ALIAS, REF, TAG, TAG_KEY, json_option, pairs_to_dict


@click.command(cls=Command)
@click.argument("ref", type=REF)
@click.argument("tags", nargs=-1, required=True, type=TAG, callback=pairs_to_dict, metavar="K=V...")
@json_option
def tag(ref: str, tags: dict[str, str], as_json: bool) -> None:
    """Add or change tags of REF (metadata only: the weights never change)."""
    mv = open_registry().tag(ref, tags)
    old = mv.change.before if mv.change is not None else {}
    changes = [
        f"{k}: {old[k]} -> {v}" if k in old else f"{k}={v}"
        for k, v in (mv.change.after if mv.change is not None else {}).items()
    ]
    _show_tags(mv, as_json, "set " + ", ".join(changes) if changes else "no change")


@click.command(cls=Command)
@click.argument("ref", type=REF)
@click.argument("keys", nargs=-1, required=True, type=TAG_KEY, metavar="KEY...")
@json_option
def untag(ref: str, keys: tuple[str, ...], as_json: bool) -> None:
    """Remove tags from REF by key."""
    mv = open_registry().untag(ref, keys)
    assert mv.change is not None  # a key it lacks is an error
    _show_tags(mv, as_json, "removed " + ", ".join(f"{k}={v}" for k, v in mv.change.before.items()))


def _show_tags(mv: Any, as_json: bool, change: str) -> None:
    if as_json:
        emit_json(mv.to_dict(tensors=False))
        return
    labels = ", ".join(f"{k}={v}" for k, v in mv.tags.items()) or "none"
    say(f"{mv.ref}: {change}; its tags: {labels}")
    click.echo(mv.ref)


@click.command(cls=Command)
@click.argument("ref", required=False, type=REF)
@click.argument("alias_name", required=False, type=ALIAS, metavar="ALIAS")
@click.option(
    "--delete", "delete", type=REF, metavar="NAME:ALIAS", help="Delete this alias instead."
)
@json_option
def alias(ref: str | None, alias_name: str | None, delete: str | None, as_json: bool) -> None:
    """Point ALIAS (e.g. production) of REF's model at REF, moving it if it was elsewhere."""
    reg = open_registry()
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
        emit_json(mv.to_dict(tensors=False))
        return
    say(message)
    click.echo(mv.ref)


@click.command(cls=Command)
@click.argument("ref", type=REF)
@click.argument("text", required=False)
@click.option("--clear", is_flag=True, help="Remove the description.")
@json_option
def describe(ref: str, text: str | None, clear: bool, as_json: bool) -> None:
    """Set the description of REF."""
    if (text is None) == (not clear):
        raise click.UsageError("give TEXT, or --clear")
    mv = open_registry().describe(ref, None if clear else text)
    if as_json:
        emit_json(mv.to_dict(tensors=False))
        return
    was = mv.change.before["description"] if mv.change is not None else None
    if mv.change is None:
        say(f"{mv.ref}: description unchanged")
    elif mv.description is None:
        say(f"{mv.ref}: description cleared (it was {was!r})")
    elif was is None:
        say(f"{mv.ref}: description set")
    else:
        say(f"{mv.ref}: description replaced (it was {was!r})")
    click.echo(mv.ref)


@click.command(cls=Command, name="rm")
@click.argument("ref", type=REF)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force", is_flag=True, help="Also delete the aliases that point at it.")
@json_option
def rm(ref: str, yes: bool, force: bool, as_json: bool) -> None:
    """Delete a version (its tensors stay until `registry gc`).

    A version an alias points at needs --force, which deletes the alias too; versions
    whose parent it is lose their parent. Both are said before and after.
    """
    reg = open_registry()
    mv = reg.get(ref)
    # What the removal does besides, gathered here to be said before and after: the
    # API's remove does not report it.
    children = [c.ref for c in reg.children(mv.ref)]
    aliases = [f"{mv.name}:{a}" for a in mv.aliases]
    if aliases and not force:
        reg.remove(mv.ref)  # refused before asking, with the message that says what to do
    if not yes:
        _confirm_removal(mv.ref, aliases if force else [], children)
    removed = reg.remove(mv.ref, force=force)
    if as_json:
        emit_json(
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
    say(f"{said}; run `registry gc` to free tensors no other version uses")
    click.echo(removed.ref)


def _confirm_removal(ref: str, aliases: list[str], children: list[str]) -> None:
    """Ask on the terminal before ``rm`` deletes ``ref`` (and ``aliases``); a no, or no
    terminal to answer on, deletes nothing."""
    consequences = []
    if aliases:
        consequences.append(f"deletes {_join(aliases)}")
    if children:
        consequences.append(f"leaves {_join(children)} without a parent")
    question = f"delete {ref}" + (f" ({'; '.join(consequences)})" if consequences else "")
    try:
        answer = click.confirm(f"{question}?", err=True)
    except click.Abort:  # no terminal to answer on
        raise click.ClickException(
            "nothing deleted: no answer to the question (use --yes to delete without asking)"
        ) from None
    if not answer:
        raise click.ClickException("nothing deleted")


def _join(items: list[str]) -> str:
    return ", ".join(items)
