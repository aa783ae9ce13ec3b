"""Catalogue reads (and tag edits) in plain SQL over a DB-API connection.

The metadata commands (``list``, ``show``, ``tag``) must answer well under 0.3 s,
and importing SQLAlchemy alone takes ~0.2 s on a small machine. So every read goes
through this module on a bare DB-API connection: :mod:`sqlite3` from the standard
library for a SQLite catalogue (no SQLAlchemy import at all), or the SQLAlchemy
engine's raw connection for other databases. The ORM in ``models.py`` stays the
definition of the schema and the path pushes write through; the SQL here is
portable between SQLite and PostgreSQL and names only columns the models define.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import AmbiguousReferenceError, ModelNotFoundError, VersionNotFoundError
from ..records import PROVENANCE_FIELDS, Event, ModelVersion, Shared, TensorInfo
from ..refs import Ref
from ..sharing import from_columns

#: Bound parameters per IN (...) list; SQLite's default limit is 32766.
_CHUNK = 10_000

_VERSION_COLUMNS = ", ".join(
    f"v.{column}" if column != "name" else "m.name"
    for column in (
        "id", "model_id", "name", "version", "digest", "arch", "arch_kwargs", "description",
        "parent_id", "total_bytes", "param_count", "tensor_count", "torch_version",
        "source_format", "created_at", "origin_created_at", *PROVENANCE_FIELDS,
    )
)  # fmt: skip
_FROM_VERSIONS = f"SELECT {_VERSION_COLUMNS} FROM versions v JOIN models m ON m.id = v.model_id"


@dataclass(frozen=True)
class VersionRow:
    """One row of ``versions`` with its model's name."""

    id: int
    model_id: int
    name: str
    version: int
    digest: str
    arch: str
    arch_kwargs: Any
    description: str | None
    parent_id: int | None
    total_bytes: int
    param_count: int
    tensor_count: int
    torch_version: str
    source_format: str
    created_at: Any
    origin_created_at: Any = None
    # PROVENANCE_FIELDS, in that order:
    pushed_by: str | None = None
    pushed_host: str | None = None
    source_path: str | None = None
    git_commit: str | None = None
    git_dirty: Any = None  # 0/1 from SQLite, bool from PostgreSQL
    registry_version: str | None = None
    arch_module: str | None = None


@dataclass(frozen=True)
class Location:
    """Where one state-dict entry's bytes are."""

    name: str
    dtype: str
    shape: list[int]
    digest: str
    nbytes: int
    pack_id: str
    offset: int
    checksum: str | None
    shared: Shared | None = None  # its place in a storage shared with other keys


@dataclass(frozen=True)
class StoredBlob:
    """Where the bytes of one digest are stored."""

    digest: str
    pack_id: str
    offset: int
    nbytes: int


def _json(value: Any) -> Any:
    """JSON columns come back as text from SQLite and parsed from PostgreSQL."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _utc(value: Any) -> datetime:
    """SQLite keeps naive UTC text; PostgreSQL returns aware datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (bound parameters per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
SORTS = {
    "created": ("v.created_at DESC", "v.id DESC"),
    "name": ("m.name ASC", "v.version ASC"),
    "size": ("v.total_bytes DESC", "v.id DESC"),
    "params": ("v.param_count DESC", "v.id DESC"),
}


def _order(sort: str, reverse: bool) -> str:
    terms = SORTS[sort]
    if reverse:
        flip = {"ASC": "DESC", "DESC": "ASC"}
        terms = tuple(f"{t.rsplit(' ', 1)[0]} {flip[t.rsplit(' ', 1)[1]]}" for t in terms)
    return ", ".join(terms)


def _glob_to_like(pattern: str) -> str:
    """``res*`` -> ``res%`` with LIKE's own wildcards escaped (escape character ``!``)."""
    out = []
    for char in pattern:
        if char in "%_!":
            out.append("!" + char)
        elif char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        else:
            out.append(char)
    return "".join(out)


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 text, tuples as lists: what an event's JSON holds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def event_json(value: Any) -> str | None:
    """An event's ``before``/``after`` as JSON text; None stays NULL."""
    return None if value is None else json.dumps(jsonable(value))


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
        at=_utc(when),
        kind="push",
        name=name,
        version=version,
        actor=facts.get("pushed_by") or "unknown",
        host=facts.get("pushed_host"),
        before=None,
        after={key: facts.get(key) for key in PUSH_KEYS},
    )


class Catalog:
    """Queries on one open DB-API connection; ``?`` placeholders in the SQL below."""

    def __init__(self, connection: Any, *, qmark: bool):
        self._connection = connection
        self._qmark = qmark

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if not self._qmark:
            sql = sql.replace("?", "%s")
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        finally:
            cursor.close()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Catalog]:
        """One consistent snapshot for reads; the write lock up front for writes (SQLite)."""
        if self._qmark:
            self.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield self
        except BaseException:
            self._connection.rollback() if not self._qmark else self.execute("ROLLBACK")
            raise
        if self._qmark:
            self.execute("COMMIT")
        else:
            self._connection.commit()

    # -- schema -------------------------------------------------------------------

    def revision(self) -> str | None:
        """The stamped schema revision; None if there is none (or no version table)."""
        rows = self.execute("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None

    # -- versions -----------------------------------------------------------------

    def model_id(self, name: str) -> int:
        """The model's id; ModelNotFoundError (with close names) if there is none."""
        rows = self.execute("SELECT id FROM models WHERE name = ?", (name,))
        if not rows:
            names = [n for (n,) in self.execute("SELECT name FROM models")]
            close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(f"no model named {name!r} in the registry{hint}")
        return int(rows[0][0])

    def resolve(self, ref: Ref) -> VersionRow:
        """The version a parsed reference names, or a NotFound/Ambiguous error that says why."""
        model_id = self.model_id(ref.name)
        where = " WHERE v.model_id = ?"
        if ref.version is not None:
            rows = self.execute(
                _FROM_VERSIONS + where + " AND v.version = ?", (model_id, ref.version)
            )
            if not rows:
                latest = self.execute(
                    "SELECT MAX(version) FROM versions WHERE model_id = ?", (model_id,)
                )[0][0]
                last = self.execute("SELECT last_version FROM models WHERE id = ?", (model_id,))
                hint = f"the latest is {ref.name}:{latest}" if latest else "it has no versions left"
                if ref.version <= (last[0][0] or 0):  # numbers are never reused: it was removed
                    raise VersionNotFoundError(f"{ref.name}:{ref.version} was removed; {hint}")
                raise VersionNotFoundError(f"{ref.name} has no version {ref.version}; {hint}")
        elif ref.alias is not None:
            rows = self.execute(
                _FROM_VERSIONS
                + " JOIN aliases a ON a.version_id = v.id"
                + where
                + " AND a.model_id = ? AND a.alias = ?",
                (model_id, model_id, ref.alias),
            )
            if not rows:
                aliases = [
                    a
                    for (a,) in self.execute(
                        "SELECT alias FROM aliases WHERE model_id = ?", (model_id,)
                    )
                ]
                close = difflib.get_close_matches(ref.alias, aliases, n=3, cutoff=0.6)
                if close:
                    hint = f"; did you mean {', '.join(f'{ref.name}:{a}' for a in close)}?"
                elif aliases:
                    hint = f" (its aliases: {', '.join(sorted(aliases))})"
                else:
                    hint = " (it has no aliases)"
                raise VersionNotFoundError(f"{ref.name} has no alias {ref.alias!r}{hint}")
        elif ref.digest_prefix is not None:
            prefix = ref.digest_prefix
            rows = self.execute(
                _FROM_VERSIONS + where + " AND v.digest >= ? AND v.digest < ? LIMIT 2",
                (model_id, prefix, prefix + "g"),
            )
            if not rows:
                raise VersionNotFoundError(
                    f"{ref.name} has no version with digest sha256:{prefix}..."
                )
            if len(rows) > 1:
                raise AmbiguousReferenceError(
                    f"sha256:{prefix} matches several versions of {ref.name}; give more hex digits"
                )
        else:
            rows = self.execute(
                _FROM_VERSIONS + where + " ORDER BY v.version DESC LIMIT 1", (model_id,)
            )
            if not rows:
                raise VersionNotFoundError(f"{ref.name} has no versions")
        return VersionRow(*rows[0])

    def version_by_id(self, version_id: int) -> VersionRow:
        return VersionRow(*self.execute(_FROM_VERSIONS + " WHERE v.id = ?", (version_id,))[0])

    def list_versions(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        sort: str = "created",
        reverse: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[VersionRow]:
        """Versions matching every filter, in ``sort`` order, one page of them.

        One query whatever the page size; the default order (newest first) walks the
        ``created_at`` index, so a page costs the same with 10 or 10,000 versions.
        """
        where, params = self._where(name, tags, arch, since, before)
        sql = f"{_FROM_VERSIONS}{where} ORDER BY {_order(sort, reverse)}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [-1 if limit is None and self._qmark else limit, offset]
        return [VersionRow(*row) for row in self.execute(sql, params)]

    def count_versions(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
    ) -> int:
        where, params = self._where(name, tags, arch, since, before)
        sql = "SELECT COUNT(*) FROM versions v JOIN models m ON m.id = v.model_id" + where
        return int(self.execute(sql, params)[0][0])

    def _where(
        self,
        name: str | None,
        tags: Mapping[str, str] | None,
        arch: str | None,
        since: datetime | None,
        before: datetime | None,
    ) -> tuple[str, list[Any]]:
        conditions, params = [], []
        if name is not None:
            if any(c in name for c in "*?"):
                conditions.append("m.name LIKE ? ESCAPE '!'")
                params.append(_glob_to_like(name))
            else:
                conditions.append("m.name = ?")
                params.append(name)
        for key, value in (tags or {}).items():
            conditions.append("v.id IN (SELECT version_id FROM tags WHERE key = ? AND value = ?)")
            params += [key, value]
        if arch is not None:
            conditions.append("v.arch = ?")
            params.append(arch)
        if since is not None:
            conditions.append("v.created_at >= ?")
            params.append(self._timestamp(since))
        if before is not None:
            conditions.append("v.created_at < ?")
            params.append(self._timestamp(before))
        return (" WHERE " + " AND ".join(conditions) if conditions else ""), params

    def _timestamp(self, moment: datetime) -> Any:
        """SQLite keeps naive UTC text (as SQLAlchemy wrote it); others take datetimes."""
        moment = moment.astimezone(timezone.utc)
        return moment.replace(tzinfo=None).strftime(_SQLITE_TIME) if self._qmark else moment

    def records(
        self, versions: Sequence[VersionRow], *, with_tensors: bool = False
    ) -> list[ModelVersion]:
        """API records for ``versions``: tags, aliases and parents in three queries."""
        ids = [v.id for v in versions]
        tags: dict[int, dict[str, str]] = {i: {} for i in ids}
        aliases: dict[int, list[str]] = {i: [] for i in ids}
        parents: dict[int, str] = {}
        for vid, key, value in self._for_versions("version_id, key, value", "tags", "key", ids):
            if vid in tags:
                tags[vid][key] = value
        for vid, alias in self._for_versions("version_id, alias", "aliases", "alias", ids):
            if vid in aliases:
                aliases[vid].append(alias)
        parent_ids = sorted({v.parent_id for v in versions if v.parent_id is not None})
        for chunk in chunks(parent_ids):
            for vid, name, number in self.execute(
                "SELECT v.id, m.name, v.version FROM versions v JOIN models m ON m.id = v.model_id "
                f"WHERE v.id IN ({_marks(len(chunk))})",
                chunk,
            ):
                parents[vid] = f"{name}:{number}"
        return [
            ModelVersion(
                name=v.name,
                version=v.version,
                digest=v.digest,
                arch=v.arch,
                arch_kwargs=dict(_json(v.arch_kwargs) or {}),
                created_at=_utc(v.created_at),
                total_bytes=v.total_bytes,
                param_count=v.param_count,
                tensor_count=v.tensor_count,
                torch_version=v.torch_version,
                source_format=v.source_format,
                description=v.description,
                tags=tags[v.id],
                aliases=tuple(aliases[v.id]),
                parent=parents.get(v.parent_id) if v.parent_id is not None else None,
                tensors=self._tensors(v.id) if with_tensors else (),
                origin_created_at=(
                    _utc(v.origin_created_at) if v.origin_created_at is not None else None
                ),
                **{
                    **{key: getattr(v, key) for key in PROVENANCE_FIELDS},
                    "git_dirty": None if v.git_dirty is None else bool(v.git_dirty),
                },
            )
            for v in versions
        ]

    def _for_versions(
        self, columns: str, table: str, order: str, ids: Sequence[int]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` for these version ids in one statement, however many ids.

        Up to _CHUNK ids go in an IN list; more than that (a listing of everything)
        read the whole table once instead.
        """
        if not ids:
            return []
        if len(ids) > _CHUNK:
            return self.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")
        return self.execute(
            f"SELECT {columns} FROM {table} WHERE version_id IN ({_marks(len(ids))}) "
            f"ORDER BY {order}",
            ids,
        )

    def _tensors(self, version_id: int) -> tuple[TensorInfo, ...]:
        found = []
        for name, dtype, shape, digest, nbytes, group, view in self.execute(
            "SELECT name, dtype, shape, digest, nbytes, storage_group, storage_view "
            "FROM tensors WHERE version_id = ? ORDER BY position",
            (version_id,),
        ):
            dims = _json(shape)
            shared = from_columns(group, _json(view), dims)
            found.append(TensorInfo(name, dtype, tuple(dims), digest, nbytes, shared))
        return tuple(found)

    def tensor_locations(self, version_id: int) -> list[Location]:
        """The version's tensors in state-dict order, each with where its bytes are."""
        found = []
        for (
            name,
            dtype,
            shape,
            digest,
            nbytes,
            pack_id,
            offset,
            checksum,
            group,
            view,
        ) in self.execute(
            'SELECT t.name, t.dtype, t.shape, t.digest, b.nbytes, b.pack_id, b."offset", '
            "b.checksum, t.storage_group, t.storage_view FROM tensors t "
            "JOIN blobs b ON b.digest = t.digest WHERE t.version_id = ? ORDER BY t.position",
            (version_id,),
        ):
            dims = _json(shape)
            shared = from_columns(group, _json(view), dims)
            found.append(
                Location(name, dtype, dims, digest, nbytes, pack_id, offset, checksum, shared)
            )
        return found

    def version_metadata(self, version_id: int) -> tuple[Any, Any, Any]:
        """(state_metadata, file_metadata, assumed_metadata) of a version, parsed JSON."""
        rows = self.execute(
            "SELECT state_metadata, file_metadata, assumed_metadata FROM versions WHERE id = ?",
            (version_id,),
        )
        return tuple(_json(v) for v in rows[0]) if rows else (None, None, None)  # type: ignore[return-value]

    def blobs_by_checksum(self, checksums: Iterable[str]) -> dict[str, list[StoredBlob]]:
        """Stored blobs whose checksum is one of ``checksums``: candidates, not proof."""
        found: dict[str, list[StoredBlob]] = {}
        for chunk in chunks(sorted(set(checksums))):
            for row in self.execute(
                'SELECT digest, pack_id, "offset", nbytes, checksum FROM blobs '
                f"WHERE checksum IN ({_marks(len(chunk))})",
                chunk,
            ):
                found.setdefault(row[4], []).append(StoredBlob(*row[:4]))
        return found

    # -- aliases, descriptions, lineage, removal --------------------------------------

    def set_alias(self, version: VersionRow, alias: str) -> None:
        """Point ``alias`` of the version's model at it, moving it from any other version."""
        self.execute(
            "INSERT INTO aliases (model_id, alias, version_id) VALUES (?, ?, ?) "
            "ON CONFLICT (model_id, alias) DO UPDATE SET version_id = excluded.version_id",
            (version.model_id, alias, version.id),
        )

    def delete_alias(self, model_id: int, alias: str) -> None:
        self.execute("DELETE FROM aliases WHERE model_id = ? AND alias = ?", (model_id, alias))

    def set_description(self, version_id: int, description: str | None) -> None:
        self.execute("UPDATE versions SET description = ? WHERE id = ?", (description, version_id))

    def lineage(self, version: VersionRow, limit: int = 1000) -> list[VersionRow]:
        """The version, its parent, its parent's parent, ... (cycles cannot occur, but stop)."""
        chain = [version]
        while chain[-1].parent_id is not None and len(chain) < limit:
            chain.append(self.version_by_id(chain[-1].parent_id))
        return chain

    def children(self, version: VersionRow) -> list[VersionRow]:
        """The versions whose parent is ``version``, by name and number."""
        return [
            VersionRow(*row)
            for row in self.execute(
                _FROM_VERSIONS + " WHERE v.parent_id = ? ORDER BY m.name, v.version", (version.id,)
            )
        ]

    def delete_version(self, version_id: int) -> None:
        """Delete a version with its tags, tensor rows and aliases (children keep no parent)."""
        self.execute("DELETE FROM versions WHERE id = ?", (version_id,))

    def known_digests(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` are stored."""
        found: set[str] = set()
        for chunk in chunks(list(digests)):
            found.update(
                d
                for (d,) in self.execute(
                    f"SELECT digest FROM blobs WHERE digest IN ({_marks(len(chunk))})", chunk
                )
            )
        return found

    # -- the store's bookkeeping (gc, verify) ------------------------------------------

    def all_blobs(self) -> list[tuple[StoredBlob, str | None]]:
        """Every stored blob with its checksum, pack by pack in file order."""
        return [
            (StoredBlob(d, p, o, n), c)
            for d, p, o, n, c in self.execute(
                'SELECT digest, pack_id, "offset", nbytes, checksum FROM blobs '
                'ORDER BY pack_id, "offset"'
            )
        ]

    def live_digests(self) -> set[str]:
        """Digests some version's tensor uses."""
        return {d for (d,) in self.execute("SELECT DISTINCT digest FROM tensors")}

    def packs(self) -> dict[str, int]:
        return {p: int(n) for p, n in self.execute("SELECT id, nbytes FROM packs")}

    def add_pack_row(self, pack_id: str, nbytes: int) -> None:
        self.execute(
            "INSERT INTO packs (id, nbytes, created_at) VALUES (?, ?, ?)",
            (pack_id, nbytes, self._timestamp(datetime.now(timezone.utc))),
        )

    def move_blob(self, digest: str, pack_id: str, offset: int) -> None:
        self.execute(
            'UPDATE blobs SET pack_id = ?, "offset" = ? WHERE digest = ?', (pack_id, offset, digest)
        )

    def delete_blobs(self, digests: Sequence[str]) -> None:
        for chunk in chunks(list(digests)):
            self.execute(f"DELETE FROM blobs WHERE digest IN ({_marks(len(chunk))})", chunk)

    def delete_pack_rows(self, pack_ids: Sequence[str]) -> None:
        for chunk in chunks(list(pack_ids)):
            self.execute(f"DELETE FROM packs WHERE id IN ({_marks(len(chunk))})", chunk)

    def users_of(self, digests: Sequence[str]) -> dict[str, list[str]]:
        """``name:version tensor`` for every use of each digest."""
        found: dict[str, list[str]] = {d: [] for d in digests}
        for chunk in chunks(list(digests)):
            for digest, name, number, tensor in self.execute(
                "SELECT t.digest, m.name, v.version, t.name FROM tensors t "
                "JOIN versions v ON v.id = t.version_id JOIN models m ON m.id = v.model_id "
                f"WHERE t.digest IN ({_marks(len(chunk))}) ORDER BY m.name, v.version, t.position",
                chunk,
            ):
                found[digest].append(f"{name}:{number} {tensor}")
        return found

    # -- events (the history: ``registry log``) --------------------------------------

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
                self._timestamp(at),
                actor[0],
                actor[1],
                kind,
                name,
                number,
                version_id,
                event_json(before),
                event_json(after),
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
                at=_utc(at),
                kind=kind,
                name=ename,
                version=number,
                actor=actor,
                host=host,
                before=_json(before),
                after=_json(after),
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
                "arch_kwargs": _json(kwargs) or {},
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

    def tags_of(self, version_id: int) -> dict[str, str]:
        return dict(self.execute("SELECT key, value FROM tags WHERE version_id = ?", (version_id,)))

    def alias_target(self, model_id: int, alias: str) -> tuple[int, int] | None:
        """(version id, version number) the alias points at, or None if there is no alias."""
        rows = self.execute(
            "SELECT v.id, v.version FROM aliases a JOIN versions v ON v.id = a.version_id "
            "WHERE a.model_id = ? AND a.alias = ?",
            (model_id, alias),
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else None

    # -- tags ---------------------------------------------------------------------

    def set_tags(self, version_id: int, tags: Mapping[str, str]) -> None:
        """Add or overwrite tags of a version (call inside a write transaction)."""
        for key, value in tags.items():
            self.execute(
                "INSERT INTO tags (version_id, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (version_id, key) DO UPDATE SET value = excluded.value",
                (version_id, key, value),
            )

    def remove_tags(self, version_id: int, keys: Iterable[str]) -> list[str]:
        """Remove tags by key; returns the keys that were there."""
        keys = list(dict.fromkeys(keys))
        present = (
            {
                k
                for (k,) in self.execute(
                    f"SELECT key FROM tags WHERE version_id = ? AND key IN ({_marks(len(keys))})",
                    (version_id, *keys),
                )
            }
            if keys
            else set()
        )
        for key in keys:
            if key in present:
                self.execute("DELETE FROM tags WHERE version_id = ? AND key = ?", (version_id, key))
        return [k for k in keys if k in present]
