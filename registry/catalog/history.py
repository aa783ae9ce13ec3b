"""The history: events (who changed what, when, from what to what) and the pushes.

Part of the one gateway (``gateway.Catalog``). ``records.EVENT_KINDS`` says what each
kind's ``before`` and ``after`` hold. Must never import torch, SQLAlchemy or anything
above ``catalog``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..records import PROVENANCE_FIELDS, Event, ModelVersion
from .rows import Statements, VersionRow, jsonable, parse_json, to_json, utc

#: What a removal records of the version it removes (and what its push is read from
#: once the version is gone).
SNAPSHOT_KEYS = (
    "digest",
    "arch",
    "arch_kwargs",
    "tags",
    "aliases",
    "description",
    "parent",
    "created_at",
    "origin_created_at",
    "torch_version",
    *PROVENANCE_FIELDS,
)
#: What a push event's ``after`` holds, from the version it made.
PUSH_KEYS = (
    "digest",
    "arch",
    "arch_kwargs",
    "parent",
    "source_path",
    "git_commit",
    "git_dirty",
    "registry_version",
    "torch_version",
)


def version_snapshot(record: ModelVersion) -> dict[str, Any]:
    """A version's catalogue facts as plain JSON values (a removal's ``before``)."""
    facts = jsonable({key: getattr(record, key) for key in SNAPSHOT_KEYS})
    facts["digest"] = f"sha256:{record.digest}"  # as every JSON answer spells a digest
    return facts


def push_event(name: str, version: int, facts: Mapping[str, Any]) -> Event | None:
    """The push that made a version, read from its facts (a row, or a removal's
    snapshot); None when they do not say when it was made."""
    when = facts.get("origin_created_at") or facts.get("created_at")
    if when is None:
        return None
    return Event(
        at=utc(when),
        kind="push",
        name=name,
        version=version,
        actor=facts.get("pushed_by") or "unknown",
        host=facts.get("pushed_host"),
        before=None,
        after={key: facts.get(key) for key in PUSH_KEYS},
    )


class HistoryQueries(Statements):
    """Events and the pushes the history did not record."""

    def record_event(
        self,
        kind: str,
        version: VersionRow | tuple[str, int | None, int | None],
        before: Any,
        after: Any,
        *,
        actor: tuple[str, str | None] | None = None,
        at: datetime | None = None,
    ) -> Event:
        """Add an event to the history (call inside the write transaction of the change)
        and return it.

        ``version`` is the row changed, or (model name, version number or None,
        version id or None). ``before``/``after`` are JSON values (datetimes become
        ISO 8601 text; see ``records.EVENT_KINDS``). ``actor`` is (user, host),
        by default whoever runs this (``REGISTRY_USER``, else the login name); ``at``
        defaults to now.
        """
        if isinstance(version, VersionRow):
            name, number, version_id = version.name, version.version, version.id
        else:
            name, number, version_id = version
        if actor is None:
            from ..provenance import actor as current_actor

            actor = current_actor()
        at = at or datetime.now(timezone.utc)
        self.execute(
            'INSERT INTO events (at, actor, host, kind, name, version, version_id, "before", '
            '"after") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (
                self.timestamp(at),
                actor[0],
                actor[1],
                kind,
                name,
                number,
                version_id,
                to_json(before),
                to_json(after),
            ),
        )
        return Event(
            at=at,
            kind=kind,
            name=name,
            version=number,
            actor=actor[0],
            host=actor[1],
            before=jsonable(before),
            after=jsonable(after),
        )

    def record_push(
        self,
        version: VersionRow,
        facts: Mapping[str, Any],
        *,
        actor: tuple[str, str | None],
    ) -> Event:
        """The push that made ``version``, as it was (its parent then, whatever happens
        to the parent later): the PUSH_KEYS of ``facts``, dated when the row was made."""
        after = {key: value for key, value in facts.items() if key in PUSH_KEYS}
        return self.record_event("push", version, None, after, actor=actor, at=version.created_at)

    def record_removal(
        self, version: VersionRow, record: ModelVersion, children: list[VersionRow]
    ) -> Event:
        """The removal of ``version``: what it was (SNAPSHOT_KEYS of its ``record``) and
        the children that lose their parent with it, from which its push can be told
        once the row is gone."""
        snapshot = version_snapshot(record)
        if children:
            snapshot["children"] = [f"{c.name}:{c.version}" for c in children]
        return self.record_event("remove", version, snapshot, None)

    def events(
        self, name: str | None = None, version: int | None = None, *, limit: int | None = None
    ) -> list[Event]:
        """Recorded events, newest first: all, a model's, or one version's.

        A version's events include those of an alias that moved away from it.
        """
        sql = 'SELECT id, at, actor, host, kind, name, version, "before", "after" FROM events'
        params: list[Any] = []
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
            if version is not None:
                sql += " AND (version = ? OR kind = 'alias')"
                params.append(version)
        sql += " ORDER BY at DESC, id DESC"
        if limit is not None and version is None:
            sql += " LIMIT ?"
            params.append(limit)
        found = []
        for event_id, at, actor, host, kind, ename, number, before, after in self.execute(
            sql, params
        ):
            event = Event(
                at=utc(at),
                kind=kind,
                name=ename,
                version=number,
                actor=actor,
                host=host,
                before=parse_json(before),
                after=parse_json(after),
                id=event_id,
            )
            if version is not None and number != version:
                moved = event.before if isinstance(event.before, dict) else {}
                if moved.get("version") != version:
                    continue
            found.append(event)
        return found[:limit] if limit is not None else found

    def pushes(
        self, name: str | None = None, version: int | None = None, *, limit: int | None = None
    ) -> list[Event]:
        """The pushes that made the versions there are and that the history did not
        record (versions pushed before revision 0004, imported ones), newest first (an
        imported version's at its original creation), read from the versions themselves."""
        when = "COALESCE(v.origin_created_at, v.created_at)"
        sql = (
            "SELECT m.name, v.version, v.digest, v.arch, v.arch_kwargs, v.created_at, "
            "v.origin_created_at, v.pushed_by, v.pushed_host, v.source_path, v.git_commit, "
            "v.git_dirty, v.registry_version, v.torch_version, pm.name, p.version "
            "FROM versions v JOIN models m ON m.id = v.model_id "
            "LEFT JOIN versions p ON p.id = v.parent_id "
            "LEFT JOIN models pm ON pm.id = p.model_id"
        )
        sql += (
            " WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.version_id = v.id"
            " AND e.kind = 'push')"
        )
        params: list[Any] = []
        if name is not None:
            sql += " AND m.name = ?"
            params.append(name)
            if version is not None:
                sql += " AND v.version = ?"
                params.append(version)
        sql += f" ORDER BY {when} DESC, v.id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        found = []
        for row in self.execute(sql, params):
            (vname, number, digest, arch, kwargs, created, origin, by, host, path, commit,
             dirty, registry, torch_version, parent_name, parent_number) = row  # fmt: skip
            facts = {
                "digest": f"sha256:{digest}",
                "arch": arch,
                "arch_kwargs": parse_json(kwargs) or {},
                "parent": f"{parent_name}:{parent_number}" if parent_name else None,
                "source_path": path,
                "git_commit": commit,
                "git_dirty": None if dirty is None else bool(dirty),
                "registry_version": registry,
                "torch_version": torch_version,
                "created_at": created,
                "origin_created_at": origin,
                "pushed_by": by,
                "pushed_host": host,
            }
            event = push_event(vname, number, facts)
            if event is not None:
                found.append(event)
        return found

    def history(
        self, name: str | None, number: int | None, *, limit: int | None = None
    ) -> list[Event]:
        """Events and pushes, newest first: the registry's, a model's, or one version's.

        Pushes the events did not record (versions pushed before revision 0004,
        imported ones) come from the versions themselves, or from a removal's snapshot.
        At one moment a version's push comes before its events, in the order made.
        """
        events = self.events(name, number, limit=limit)
        pushes = self.pushes(name, number, limit=limit)
        recorded = {(e.name, e.version) for e in events if e.kind == "push"}
        for event in events:  # the push of a removed version, from what its removal kept
            if event.kind == "remove" and (event.name, event.version) not in recorded:
                if isinstance(event.before, dict):
                    made = push_event(event.name, event.version, event.before)  # type: ignore[arg-type]
                    if made is not None:
                        pushes.append(made)
        found = sorted(
            events + pushes,
            key=lambda e: (
                e.at,
                e.kind != "push",
                (e.version or 0) if e.kind == "push" else 0,  # pushes in the order made
                e.id or 0,
                e.version or 0,
            ),
            reverse=True,
        )
        return found[:limit] if limit is not None else found
