"""Organising versions: tags, aliases, descriptions and removal, each an event.

Every change runs in one write transaction with the event that records it (who,
when, before and after; ``registry log`` shows them) and returns the version's
record with ``change`` set to that event (None when nothing changed). These never
touch weights and never import torch. Must never import ``api`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TypeVar

from .._format import quoted
from ..catalog.gateway import Catalog, Contention, Gateway, VersionRow
from ..errors import InvalidArgumentError
from ..records import Event, ModelVersion
from ..refs import Ref

#: How many times a change starts over after a concurrent writer's (PostgreSQL).
_ATTEMPTS = 5
T = TypeVar("T")


def _change(gateway: Gateway, ref: Ref, apply: Callable[[Catalog, VersionRow], T]) -> T:
    """Run ``apply`` on the version ``ref`` names, in a write transaction that holds it
    (``Catalog.hold_version``: a removal meanwhile waits, or was seen and says so); again
    from the look-up when it met a concurrent writer's change (a Contention: on
    PostgreSQL, a row another transaction committed meanwhile)."""
    for attempt in range(_ATTEMPTS):
        try:
            with gateway.write() as catalog:
                version = catalog.resolve(ref)
                catalog.hold_version(version)
                return apply(catalog, version)
        except Contention:
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _record(catalog: Catalog, version: VersionRow, change: Event | None) -> ModelVersion:
    """The version as it is now, with the event that changed it."""
    return replace(catalog.records([catalog.version_by_id(version.id)])[0], change=change)


def alias(gateway: Gateway, ref: Ref, name: str) -> ModelVersion:
    """Point alias ``name`` at the version ``ref`` names, moving it if it pointed elsewhere."""

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        previous = catalog.alias_target(version.model_id, name)
        change = None
        if previous is None or previous[0] != version.id:  # a move to where it is: no change
            catalog.set_alias(version.model_id, name, version.id)
            change = catalog.record_event(
                "alias",
                version,
                None if previous is None else {"alias": name, "version": previous[1]},
                {"alias": name, "version": version.version},
            )
        return _record(catalog, version, change)

    return _change(gateway, ref, apply)


def unalias(gateway: Gateway, ref: Ref) -> ModelVersion:
    """Delete the alias ``ref`` names; the record of the version it pointed at."""
    assert ref.alias is not None

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        catalog.delete_alias(version.model_id, ref.alias)
        change = catalog.record_event(
            "unalias", version, {"alias": ref.alias, "version": version.version}, None
        )
        return _record(catalog, version, change)

    return _change(gateway, ref, apply)


def describe(gateway: Gateway, ref: Ref, description: str | None) -> ModelVersion:
    """Set (or with None, clear) a version's description."""

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        change = None
        if description != version.description:
            catalog.set_description(version.id, description)
            change = catalog.record_event(
                "describe",
                version,
                {"description": version.description},
                {"description": description},
            )
        return _record(catalog, version, change)

    return _change(gateway, ref, apply)


def tag(gateway: Gateway, ref: Ref, tags: Mapping[str, str]) -> ModelVersion:
    """Add or overwrite tags (validated, at least one); the event holds the old and new
    values of the tags that changed."""

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        old = catalog.tags_of(version.id)
        changed = {k: v for k, v in tags.items() if old.get(k) != v}
        change = None
        if changed:
            catalog.set_tags(version.id, changed)
            change = catalog.record_event(
                "tag", version, {k: old[k] for k in changed if k in old}, changed
            )
        return _record(catalog, version, change)

    return _change(gateway, ref, apply)


def untag(gateway: Gateway, ref: Ref, keys: list[str]) -> ModelVersion:
    """Remove tags by key; InvalidArgumentError (and nothing removed) for a key the
    version does not have."""

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        old = catalog.tags_of(version.id)
        missing = [k for k in keys if k not in old]
        if missing:
            raise InvalidArgumentError(
                f"{version.name}:{version.version} has no tag {', '.join(map(quoted, missing))}"
            )
        removed = catalog.remove_tags(version.id, keys)
        change = catalog.record_event("untag", version, {k: old[k] for k in removed}, {})
        return _record(catalog, version, change)

    return _change(gateway, ref, apply)


def remove(gateway: Gateway, ref: Ref, *, force: bool) -> ModelVersion:
    """Delete a version from the catalogue (see ``Registry.remove``); its record as it was."""

    def apply(catalog: Catalog, version: VersionRow) -> ModelVersion:
        record = catalog.records([version])[0]
        if record.aliases and not force:
            names = ", ".join(f"{version.name}:{a}" for a in record.aliases)
            base = (
                f"{record.ref} is what {names} point{'s' if len(record.aliases) == 1 else ''} "
                "at; nothing was deleted: move the alias first, or remove it with"
            )
            raise InvalidArgumentError(
                f"{base} force=True, which deletes the alias too",
                cli=f"{base} --force, which deletes the alias too",
            )
        for name in record.aliases:  # deleted with the version: each is history too
            catalog.record_event(
                "unalias", version, {"alias": name, "version": version.version}, None
            )
        catalog.record_removal(version, record, catalog.children(version))
        catalog.delete_version(version.id)
        return record

    return _change(gateway, ref, apply)
