"""Versions in the catalogue: finding them by reference, listing, lineage, adding, removing.

Part of the one gateway (``gateway.Catalog``); plain SQL on the connection that
``rows.Statements`` holds. Must never import torch, SQLAlchemy or anything above
``catalog``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import AmbiguousReferenceError, ModelNotFoundError, VersionNotFoundError
from ..records import PROVENANCE_FIELDS, ModelVersion
from ..refs import Ref
from .rows import (
    CHUNK,
    FROM_VERSIONS,
    Statements,
    VersionRow,
    chunks,
    marks,
    to_json,
    utc,
)

SORTS = {
    "created": ("v.created_at DESC", "v.id DESC"),
    "name": ("m.name ASC", "v.version ASC"),
    "size": ("v.total_bytes DESC", "v.id DESC"),
    "params": ("v.param_count DESC", "v.id DESC"),
}
#: Orders of ``model_summaries``: last push (newest first), name, most versions,
#: largest latest version.
MODEL_SORTS = {
    "latest": ("s.last_at DESC", "m.name ASC"),
    "name": ("m.name ASC",),
    "versions": ("s.versions DESC", "m.name ASC"),
    "size": ("v.total_bytes DESC", "m.name ASC"),
}
#: Columns of a new version row besides id, model_id, version and created_at.
NEW_VERSION_COLUMNS = (
    "digest", "arch", "arch_kwargs", "description", "parent_id", "total_bytes",
    "param_count", "tensor_count", "torch_version", "source_format", "state_metadata",
    "file_metadata", "assumed_metadata", "origin_created_at", *PROVENANCE_FIELDS,
)  # fmt: skip
_JSON_COLUMNS = {"arch_kwargs", "state_metadata", "file_metadata", "assumed_metadata"}


def _order(sort: str, reverse: bool, sorts: Mapping[str, tuple[str, ...]] = SORTS) -> str:
    terms = sorts[sort]
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


def _shape_json(shape: Sequence[int]) -> str:
    """A shape as the JSON text ``json.dumps`` gives (``[3, 4]``), ~10x faster per row."""
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


class VersionQueries(Statements):
    """Versions: resolve a reference, list, lineage, add, remove."""

    # -- finding ------------------------------------------------------------------

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
                FROM_VERSIONS + where + " AND v.version = ?", (model_id, ref.version)
            )
            if not rows:
                self._explain_missing_number(ref, model_id)
        elif ref.alias is not None:
            rows = self.execute(
                FROM_VERSIONS
                + " JOIN aliases a ON a.version_id = v.id"
                + where
                + " AND a.model_id = ? AND a.alias = ?",
                (model_id, model_id, ref.alias),
            )
            if not rows:
                self._explain_missing_alias(ref, model_id)
        elif ref.digest_prefix is not None:
            prefix = ref.digest_prefix
            rows = self.execute(
                FROM_VERSIONS + where + " AND v.digest >= ? AND v.digest < ? LIMIT 2",
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
                FROM_VERSIONS + where + " ORDER BY v.version DESC LIMIT 1", (model_id,)
            )
            if not rows:
                raise VersionNotFoundError(f"{ref.name} has no versions")
        return VersionRow.of(rows[0])

    def _explain_missing_number(self, ref: Ref, model_id: int) -> None:
        latest = self.execute("SELECT MAX(version) FROM versions WHERE model_id = ?", (model_id,))
        last = self.execute("SELECT last_version FROM models WHERE id = ?", (model_id,))
        hint = (
            f"the latest is {ref.name}:{latest[0][0]}"
            if latest[0][0]
            else "it has no versions left"
        )
        if ref.version <= (last[0][0] or 0):  # type: ignore[operator]  # numbers are never reused
            raise VersionNotFoundError(f"{ref.name}:{ref.version} was removed; {hint}")
        raise VersionNotFoundError(f"{ref.name} has no version {ref.version}; {hint}")

    def _explain_missing_alias(self, ref: Ref, model_id: int) -> None:
        aliases = [
            a for (a,) in self.execute("SELECT alias FROM aliases WHERE model_id = ?", (model_id,))
        ]
        close = difflib.get_close_matches(ref.alias or "", aliases, n=3, cutoff=0.6)
        if close:
            hint = f"; did you mean {', '.join(f'{ref.name}:{a}' for a in close)}?"
        elif aliases:
            hint = f" (its aliases: {', '.join(sorted(aliases))})"
        else:
            hint = " (it has no aliases)"
        raise VersionNotFoundError(f"{ref.name} has no alias {ref.alias!r}{hint}")

    def hold_version(self, version: VersionRow) -> None:
        """Keep ``version`` from being removed until this write transaction ends;
        VersionNotFoundError (naming it) if another process removed it since it was
        found. SQLite's write transaction holds the database's write lock already;
        PostgreSQL locks the row (a removal waits for this transaction)."""
        if self.sqlite:
            return
        if not self.execute("SELECT id FROM versions WHERE id = ? FOR UPDATE", (version.id,)):
            raise VersionNotFoundError(
                f"{version.name}:{version.version} was removed meanwhile, by another process"
            )

    def version_by_id(self, version_id: int) -> VersionRow:
        """The version with this id; VersionNotFoundError if it is gone (another
        process removed it since this one found it)."""
        rows = self.execute(FROM_VERSIONS + " WHERE v.id = ?", (version_id,))
        if not rows:
            raise VersionNotFoundError(
                f"the version (id {version_id}) was removed meanwhile, by another process"
            )
        return VersionRow.of(rows[0])

    def version_by_digest(self, name: str, digest: str, hold: bool = False) -> VersionRow | None:
        """The version of ``name`` holding exactly these weights, if there is one.

        ``hold`` (in a write transaction about to change or return that version): keep it
        from being removed until the transaction ends, as ``hold_version`` does. On
        PostgreSQL a removal committed between the look-up and the lock makes the row
        disappear from the answer (None: the caller makes a new version) instead of from
        a later read."""
        sql = FROM_VERSIONS + " WHERE m.name = ? AND v.digest = ?"
        if hold and not self.sqlite:
            sql += " FOR UPDATE OF v"
        rows = self.execute(sql, (name, digest))
        return VersionRow.of(rows[0]) if rows else None

    def version_ref(self, version_id: int) -> str:
        """``name:version`` of a version by id."""
        row = self.version_by_id(version_id)
        return f"{row.name}:{row.version}"

    # -- listing ------------------------------------------------------------------

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
        sql = f"{FROM_VERSIONS}{where} ORDER BY {_order(sort, reverse)}"
        sql += self._page(params, limit, offset)
        return [VersionRow.of(row) for row in self.execute(sql, params)]

    def _page(self, params: list[Any], limit: int | None, offset: int) -> str:
        """The LIMIT/OFFSET clause of one page (its values appended to ``params``)."""
        if limit is None and not offset:
            return ""
        params += [-1 if limit is None and self.sqlite else limit, offset]
        return " LIMIT ? OFFSET ?"

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
            params.append(self.timestamp(since))
        if before is not None:
            conditions.append("v.created_at < ?")
            params.append(self.timestamp(before))
        return (" WHERE " + " AND ".join(conditions) if conditions else ""), params

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
                f"WHERE v.id IN ({marks(len(chunk))})",
                chunk,
            ):
                parents[vid] = f"{name}:{number}"
        return [
            ModelVersion(
                name=v.name,
                version=v.version,
                digest=v.digest,
                arch=v.arch,
                arch_kwargs=dict(v.arch_kwargs),
                created_at=v.created_at,
                total_bytes=v.total_bytes,
                param_count=v.param_count,
                tensor_count=v.tensor_count,
                torch_version=v.torch_version,
                source_format=v.source_format,
                description=v.description,
                tags=tags[v.id],
                aliases=tuple(aliases[v.id]),
                parent=parents.get(v.parent_id) if v.parent_id is not None else None,
                tensors=self.tensor_infos(v.id) if with_tensors else (),  # type: ignore[attr-defined]
                origin_created_at=v.origin_created_at,
                **{key: getattr(v, key) for key in PROVENANCE_FIELDS},
            )
            for v in versions
        ]

    def _for_versions(
        self, columns: str, table: str, order: str, ids: Sequence[int]
    ) -> list[tuple[Any, ...]]:
        """Rows of ``table`` for these version ids in one statement, however many ids.

        Up to CHUNK ids go in an IN list; more than that (a listing of everything)
        read the whole table once instead.
        """
        if not ids:
            return []
        if len(ids) > CHUNK:
            return self.execute(f"SELECT {columns} FROM {table} ORDER BY {order}")
        return self.execute(
            f"SELECT {columns} FROM {table} WHERE version_id IN ({marks(len(ids))}) "
            f"ORDER BY {order}",
            ids,
        )

    # -- models -------------------------------------------------------------------

    def model_summaries(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
        sort: str = "latest",
        reverse: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[tuple[VersionRow, int, datetime, int]]:
        """Models with at least one version matching every filter, one page of them:
        (the model's latest version, its number of versions, its last push, the bytes
        of all its versions). ``sort`` is one of MODEL_SORTS.

        One statement: a grouped pass over ``versions`` joined to each model's latest
        row; 10,000 versions take a few milliseconds on SQLite (benchmarks/ui.py).
        """
        where, params = self._where(name, tags, arch, since, before)
        columns = FROM_VERSIONS[len("SELECT ") : FROM_VERSIONS.index(" FROM ")]
        sql = (
            f"SELECT {columns}, s.versions, s.last_at, s.all_bytes FROM ("
            "SELECT model_id, COUNT(*) AS versions, MAX(created_at) AS last_at, "
            "MAX(version) AS latest, SUM(total_bytes) AS all_bytes "
            "FROM versions GROUP BY model_id) s "
            "JOIN versions v ON v.model_id = s.model_id AND v.version = s.latest "
            "JOIN models m ON m.id = v.model_id"
        )
        if where:
            sql += (
                " WHERE s.model_id IN (SELECT v.model_id FROM versions v "
                f"JOIN models m ON m.id = v.model_id{where})"
            )
        sql += f" ORDER BY {_order(sort, reverse, MODEL_SORTS)}"
        sql += self._page(params, limit, offset)
        width = len(columns.split(", "))
        return [
            (VersionRow.of(row[:width]), int(row[width]), utc(row[width + 1]), int(row[width + 2]))
            for row in self.execute(sql, params)
        ]

    def count_models(
        self,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
        *,
        arch: str | None = None,
        since: datetime | None = None,
        before: datetime | None = None,
    ) -> int:
        """How many models ``model_summaries`` would give with these filters, no limit."""
        where, params = self._where(name, tags, arch, since, before)
        sql = (
            "SELECT COUNT(DISTINCT v.model_id) FROM versions v "
            "JOIN models m ON m.id = v.model_id" + where
        )
        return int(self.execute(sql, params)[0][0])

    def model_aliases(self, model_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Each model's aliases: {model id: {alias: version number}}, aliases sorted."""
        found: dict[int, dict[str, int]] = {i: {} for i in model_ids}
        for chunk in chunks(sorted(set(model_ids))):
            for model_id, alias, number in self.execute(
                "SELECT a.model_id, a.alias, v.version FROM aliases a "
                f"JOIN versions v ON v.id = a.version_id WHERE a.model_id IN ({marks(len(chunk))}) "
                "ORDER BY a.alias",
                chunk,
            ):
                found[model_id][alias] = int(number)
        return found

    # -- lineage ------------------------------------------------------------------

    def lineage(self, version: VersionRow, limit: int = 1000) -> list[VersionRow]:
        """The version, its parent, its parent's parent, ... (cycles cannot occur, but stop)."""
        chain = [version]
        while chain[-1].parent_id is not None and len(chain) < limit:
            chain.append(self.version_by_id(chain[-1].parent_id))
        return chain

    def ancestors(self, version_id: int) -> list[int]:
        """The ids of ``version_id``'s parent, grandparent, ... (stops at a repeat)."""
        chain: list[int] = []
        current: int | None = version_id
        while current is not None:
            rows = self.execute("SELECT parent_id FROM versions WHERE id = ?", (current,))
            current = rows[0][0] if rows else None
            if current is None or current in chain or current == version_id:
                break
            chain.append(current)
        return chain

    def children(self, version: VersionRow) -> list[VersionRow]:
        """The versions whose parent is ``version``, by name and number."""
        return [
            VersionRow.of(row)
            for row in self.execute(
                FROM_VERSIONS + " WHERE v.parent_id = ? ORDER BY m.name, v.version", (version.id,)
            )
        ]

    # -- adding and removing (inside a write transaction) ------------------------------

    def next_version(self, name: str, wanted: int | None = None) -> tuple[int, int]:
        """Create the model row if needed and take its next version number (never reused).

        Returns (model id, number). With ``wanted``, that number is taken if no version
        ever had it (it is above the model's last number), else the next one. The model
        row stays locked until the transaction ends (SQLite's write lock; a row lock on
        PostgreSQL), so concurrent pushes to one name queue here and never collide.
        """
        self.execute(
            "INSERT INTO models (name, last_version, created_at) VALUES (?, 0, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (name, self.timestamp()),
        )
        lock = "" if self.sqlite else " FOR UPDATE"
        model_id, last = self.execute(
            f"SELECT id, last_version FROM models WHERE name = ?{lock}", (name,)
        )[0]
        number = wanted if wanted is not None and wanted > last else last + 1
        self.execute("UPDATE models SET last_version = ? WHERE id = ?", (number, model_id))
        return int(model_id), int(number)

    def add_version(
        self,
        model_id: int,
        number: int,
        columns: Mapping[str, Any],
        tensors: Sequence[Sequence[Any]],
        tags: Mapping[str, str],
        created_at: datetime | None = None,
    ) -> VersionRow:
        """Insert a version with its tensor table and tags; returns its row.

        ``columns`` gives NEW_VERSION_COLUMNS but ``total_bytes`` and ``tensor_count``
        (counted from ``tensors``); ``tensors`` holds (name, dtype, shape, digest,
        nbytes, storage_group, storage_view) per key, in state-dict order. Raises
        Contention when a tensor's blob is gone (``gc`` removed it meanwhile).
        """
        values = {
            **{c: columns.get(c) for c in NEW_VERSION_COLUMNS},
            "total_bytes": sum(t[4] for t in tensors),
            "tensor_count": len(tensors),
        }
        values["origin_created_at"] = (
            self.timestamp(values["origin_created_at"]) if values["origin_created_at"] else None
        )
        for column in _JSON_COLUMNS:
            values[column] = to_json(values[column])
        values["arch_kwargs"] = values["arch_kwargs"] or "{}"
        names = ["model_id", "version", "created_at", *values]
        # Not RETURNING: SQLite has it only from 3.35, and the number names the row anyway.
        self.execute(
            f"INSERT INTO versions ({', '.join(names)}) VALUES ({marks(len(names))})",
            (model_id, number, self.timestamp(created_at), *values.values()),
        )
        (version_id,) = self.execute(
            "SELECT id FROM versions WHERE model_id = ? AND version = ?", (model_id, number)
        )[0]
        self.execute_many(
            "INSERT INTO tensors (version_id, position, name, dtype, shape, digest, nbytes, "
            "storage_group, storage_view) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (version_id, i, t[0], t[1], _shape_json(t[2]), t[3], t[4], t[5], to_json(t[6]))
                for i, t in enumerate(tensors)
            ],
        )
        self.add_tags(version_id, tags)  # type: ignore[attr-defined]
        return self.version_by_id(version_id)

    def set_parent(self, version_id: int, parent_id: int | None) -> None:
        self.execute("UPDATE versions SET parent_id = ? WHERE id = ?", (parent_id, version_id))

    def delete_version(self, version_id: int) -> None:
        """Delete a version with its tags, tensor rows and aliases (children keep no parent)."""
        self.execute("DELETE FROM versions WHERE id = ?", (version_id,))
