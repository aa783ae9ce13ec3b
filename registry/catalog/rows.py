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
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any

from .._faults import point
from ..errors import CatalogError, CatalogReadOnlyError
from ..records import PROVENANCE_FIELDS, Shared, TensorInfo

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


#: Set on every SQLite connection, by the gateway and by SQLAlchemy's engine alike:
#: foreign keys enforced, LIKE case-sensitive as on PostgreSQL, and a commit durable
#: (fsync'd) before it returns.
SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA case_sensitive_like=ON",
    "PRAGMA synchronous=FULL",
)


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

    @classmethod
    def of(cls, row: Sequence[Any]) -> VersionRow:
        """A row as the driver returned it (VERSION_COLUMNS order), in Python's values:
        ``arch_kwargs`` a dict, times aware UTC datetimes, ``git_dirty`` a bool or None,
        whichever database it came from."""
        version = cls(*row)
        return replace(
            version,
            arch_kwargs=dict(parse_json(version.arch_kwargs) or {}),
            created_at=utc(version.created_at),
            origin_created_at=(
                utc(version.origin_created_at) if version.origin_created_at is not None else None
            ),
            git_dirty=None if version.git_dirty is None else bool(version.git_dirty),
        )


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

    def info(self) -> TensorInfo:
        """The entry of the version's tensor table this location belongs to."""
        return TensorInfo(
            self.name, self.dtype, tuple(self.shape), self.digest, self.nbytes, self.shared
        )


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


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: What a constraint violation that a concurrent writer caused looks like: a foreign
#: key (a blob that gc removed meanwhile) or a unique key (a row another writer added
#: first). SQLSTATE on PostgreSQL, the message on SQLite. PostgreSQL's serialisation
#: failure and deadlock (it rolled this transaction back for another's sake) are
#: contention too.
_CONTENTION_STATES = {"23503", "23505", "40001", "40P01"}
_CONTENTION_TEXT = ("FOREIGN KEY constraint failed", "UNIQUE constraint failed")
#: What a refusal to write looks like: PostgreSQL's insufficient_privilege (a role
#: without INSERT, UPDATE or DELETE) and read_only_sql_transaction (a role whose
#: transactions are read-only, a standby server); SQLite's read-only file or folder.
_READ_ONLY_STATES = {"42501", "25006"}
_READ_ONLY_TEXT = ("attempt to write a readonly database",)


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a PostgreSQL driver's error (psycopg 3 or psycopg2); None else."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def is_refusal(exc: BaseException) -> bool:
    """Whether the database refused to write (see _READ_ONLY_STATES)."""
    return sqlstate(exc) in _READ_ONLY_STATES or any(t in str(exc) for t in _READ_ONLY_TEXT)


def refusal(exc: BaseException | str, where: str) -> CatalogReadOnlyError:
    """The one-line error for a write the catalogue refused (``where``: which database)."""
    detail = exc if isinstance(exc, str) else first_line(exc)
    return CatalogReadOnlyError(
        f"the catalogue refused to write (read-only access to {where}): {detail}"
    )


def _as_catalog_error(exc: Exception, where: str = "the catalogue database") -> CatalogError:
    """Contention for what a concurrent writer causes; CatalogReadOnlyError for a
    refused write; any other error (a full disk, a server that went away) is a
    CatalogError that no retry would cure, naming the database (``where``: a SQLite
    file's path or a URL without its password) so that the reader knows which side of
    the registry failed. Every message is one line."""
    state = sqlstate(exc)
    if state in _CONTENTION_STATES or any(t in str(exc) for t in _CONTENTION_TEXT):
        return Contention(
            f"catalogue database error: {first_line(exc)} (a concurrent change; try again)"
        )
    if is_refusal(exc):
        return refusal(exc, where)
    named = "" if where == "the catalogue database" else f" ({where})"
    return CatalogError(f"catalogue database error{named}: {first_line(exc)}")


class Statements:
    """Runs SQL on one open DB-API connection, in transactions this class opens.

    ``sqlite`` says the connection is :mod:`sqlite3` (``?`` placeholders, explicit
    ``BEGIN``); otherwise it is a PostgreSQL driver's (``%s``, implicit transactions).
    ``errors`` is the driver's base error class: a statement's error becomes
    :class:`Contention` (what a concurrent writer causes), :class:`CatalogReadOnlyError`
    (a write refused) or :class:`CatalogError`, with one line. ``where`` names the
    database in those messages.
    """

    def __init__(
        self,
        connection: Any,
        *,
        sqlite: bool,
        errors: type[Exception],
        where: str = "the catalogue database",
    ):
        self._connection = connection
        self.sqlite = sqlite
        self._errors = errors
        self.where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement; its rows (none for a statement that returns none).

        Without ``params`` the text goes to the driver as it is (no placeholders: a
        ``?`` or ``%`` in a quoted name stays itself).
        """
        point("sql")
        if params and not self.sqlite:
            sql = sql.replace("?", "%s")
        cursor = self._connection.cursor()
        try:
            if params:
                cursor.execute(sql, tuple(params))
            else:
                cursor.execute(sql)
            return list(cursor.fetchall()) if cursor.description else []
        except self._errors as exc:
            raise _as_catalog_error(exc, self.where) from exc
        finally:
            cursor.close()

    def execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for each of ``rows`` (one round trip per chunk of rows)."""
        if not rows:
            return
        point("sql")
        if not self.sqlite:
            sql = sql.replace("?", "%s")
        cursor = self._connection.cursor()
        try:
            for chunk in chunks(rows, 5000):
                cursor.executemany(sql, [tuple(r) for r in chunk])
        except self._errors as exc:
            raise _as_catalog_error(exc, self.where) from exc
        finally:
            cursor.close()

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[Statements]:
        """One transaction: a consistent snapshot for reads (SQLite's BEGIN; PostgreSQL's
        REPEATABLE READ), and for writes SQLite's write lock up front (PostgreSQL writes
        run at READ COMMITTED; ``next_version`` locks the model's row)."""
        if self.sqlite:
            self.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        elif not write:
            self.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            yield self
        except BaseException:
            self._connection.rollback() if not self.sqlite else self.execute("ROLLBACK")
            raise
        point("sql.commit")
        if self.sqlite:
            self.execute("COMMIT")
        else:
            self._connection.commit()
        point("sql.committed")

    def timestamp(self, moment: datetime | None = None) -> Any:
        """A datetime as the column stores it: naive UTC text on SQLite, aware elsewhere."""
        moment = (moment or datetime.now(timezone.utc)).astimezone(timezone.utc)
        if not self.sqlite:
            return moment
        # SQLAlchemy's text for SQLite: "0999-01-02 03:04:05.000000" (a 4-digit year,
        # which strftime("%Y") does not give before 1000, so ordering stays textual).
        return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
