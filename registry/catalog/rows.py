"""What the catalogue's statements share: row types, value conversions, one connection.

Every statement runs on a bare DB-API connection through :class:`Statements`:
:mod:`sqlite3` for a SQLite catalogue (no SQLAlchemy import at all) or the
SQLAlchemy engine's raw connection for PostgreSQL. The SQL is written once with ``?``
placeholders, portable between the two, and names only columns ``models.py`` defines.
Values are stored as SQLAlchemy's column types store them (naive UTC text for
datetimes on SQLite, JSON text), so rows written here and rows the ORM or Alembic
wrote read the same.

Must never import torch, SQLAlchemy (at module level) or anything above ``catalog``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..errors import CatalogError
from ..records import PROVENANCE_FIELDS, Shared

#: Bound parameters per IN (...) list; SQLite's default limit is 32766.
CHUNK = 10_000

VERSION_COLUMNS = (
    "id", "model_id", "name", "version", "digest", "arch", "arch_kwargs", "description",
    "parent_id", "total_bytes", "param_count", "tensor_count", "torch_version",
    "source_format", "created_at", "origin_created_at", *PROVENANCE_FIELDS,
)  # fmt: skip
FROM_VERSIONS = "SELECT {} FROM versions v JOIN models m ON m.id = v.model_id".format(
    ", ".join(f"v.{c}" if c != "name" else "m.name" for c in VERSION_COLUMNS)
)
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Contention(CatalogError):
    """A write met a concurrent writer's change (a constraint it violated): start over.

    Raised inside a write transaction (which is then rolled back) when a row another
    process committed meanwhile makes this one's insert invalid, e.g. a stored tensor
    that ``gc`` removed after the push found it. The pipelines that write retry; one
    that escapes is a CatalogError like any other.
    """


@dataclass(frozen=True)
class VersionRow:
    """One row of ``versions`` with its model's name (columns in VERSION_COLUMNS order)."""

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


def parse_json(value: Any) -> Any:
    """JSON columns come back as text from SQLite and parsed from PostgreSQL."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def to_json(value: Any) -> str | None:
    """A JSON column's value as text; None stays SQL NULL."""
    return None if value is None else json.dumps(jsonable(value))


def jsonable(value: Any) -> Any:
    """Datetimes as ISO 8601 text, tuples as lists: what a JSON column holds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def utc(value: Any) -> datetime:
    """SQLite keeps naive UTC text; PostgreSQL returns aware datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    """``items`` in slices of at most ``size`` (bound parameters per statement)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(count: int) -> str:
    return ", ".join("?" * count)


def _contention(exc: Exception) -> Contention:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Contention(f"catalogue database error: {detail} (a concurrent change; try again)")


class Statements:
    """Runs SQL on one open DB-API connection, in transactions this class opens.

    ``sqlite`` says the connection is :mod:`sqlite3` (``?`` placeholders, explicit
    ``BEGIN``); otherwise it is a PostgreSQL driver's (``%s``, implicit transactions).
    ``integrity`` is the driver's IntegrityError class, turned into :class:`Contention`.
    """

    def __init__(self, connection: Any, *, sqlite: bool, integrity: type[Exception]):
        self._connection = connection
        self.sqlite = sqlite
        self._integrity = integrity

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for a statement that returns none)."""
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        cursor = self._connection.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return list(cursor.fetchall()) if cursor.description else []
        except self._integrity as exc:
            raise _contention(exc) from exc
        finally:
            cursor.close()

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (one round trip per chunk of rows)."""
        if not rows:
            return
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        cursor = self._connection.cursor()
        try:
            for chunk in chunks(rows, 5000):
                cursor.executemany(sql, [tuple(r) for r in chunk])
        except self._integrity as exc:
            raise _contention(exc) from exc
        finally:
            cursor.close()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Statements]:
        """One consistent snapshot for reads; the write lock up front for writes (SQLite)."""
        if self.sqlite:
            self.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield self
        except BaseException:
            self._connection.rollback() if not self.sqlite else self.execute("ROLLBACK")
            raise
        if self.sqlite:
            self.execute("COMMIT")
        else:
            self._connection.commit()

    def timestamp(self, moment: datetime | None = None) -> Any:
        """A datetime as the column stores it: naive UTC text on SQLite, aware elsewhere."""
        moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
        return moment.replace(tzinfo=None).strftime(_SQLITE_TIME) if self.sqlite else moment

    def version_row(self, row: Sequence[Any]) -> VersionRow:
        return VersionRow(*row)
