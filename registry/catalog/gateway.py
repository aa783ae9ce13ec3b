"""The one way to the catalogue: :class:`Gateway` opens it, :class:`Catalog` asks it.

The pipelines call ``gateway.read()`` or ``gateway.write()`` and get a
:class:`Catalog` in one transaction; they never see whether :mod:`sqlite3` or a
PostgreSQL driver runs the statements, and every statement lives in this package,
grouped by concern (``versions``, ``blobs``, ``labels``, ``history``).

- A SQLite catalogue is opened with :mod:`sqlite3` directly: no SQLAlchemy import, so
  the metadata commands answer in a fraction of a second. A write transaction takes
  the write lock up front (``BEGIN IMMEDIATE``), so concurrent writers queue instead
  of failing.
- PostgreSQL is reached through the SQLAlchemy engine's raw DB-API connection
  (``engine.py``). Reads run at REPEATABLE READ (one snapshot, as on SQLite); writes
  at READ COMMITTED, where ``next_version`` locks the model's row so that concurrent
  pushes to one name queue, and a constraint a concurrent writer's row violates
  raises :class:`Contention`. Other databases are refused.
- The schema is checked once per gateway with one plain query; only a database at
  another revision (or a new one) goes through SQLAlchemy and Alembic (``schema.py``).
- Looking at a SQLite registry that does not exist creates nothing: reads answer from
  an empty in-memory catalogue.

Database errors become :class:`CatalogError` with one line; a :class:`Contention`
that a pipeline does not retry becomes one too. Must never import torch, or
SQLAlchemy at module level.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .. import config
from ..errors import CatalogError, ConfigurationError
from . import revision as schema_revision
from .blobs import BlobQueries
from .history import HistoryQueries
from .labels import LabelQueries
from .rows import SQLITE_PRAGMAS, Contention, Location, StoredBlob, VersionRow, first_line
from .versions import SORTS, VersionQueries

if TYPE_CHECKING:
    from sqlalchemy import Engine

_SCHEMA_ATTEMPTS = 6


class Catalog(VersionQueries, BlobQueries, LabelQueries, HistoryQueries):
    """Every catalogue statement, on one open connection in one transaction.

    ``versions.VersionQueries`` finds, lists, adds and removes versions;
    ``blobs.BlobQueries`` knows where tensor bytes are; ``labels.LabelQueries``
    tags, aliases and descriptions; ``history.HistoryQueries`` the events.
    """

    def revision(self) -> str | None:
        """The stamped schema revision; None if there is none (or no version table)."""
        rows = self.execute("SELECT version_num FROM alembic_version")
        return rows[0][0] if rows else None


class Gateway:
    """Opens the catalogue a database URL names; one per :class:`registry.Registry`."""

    def __init__(self, database_url: str):
        self.url = database_url
        self._sqlite_path = config.sqlite_path(database_url)
        self._schema_checked = False

    def close(self) -> None:
        """Release pooled connections (PostgreSQL)."""
        if "engine" in self.__dict__:
            self.engine.dispose()

    @cached_property
    def engine(self) -> Engine:
        """The SQLAlchemy engine: PostgreSQL connections, Alembic, and schema checks."""
        from .engine import make_engine

        return make_engine(self.url)

    @contextmanager
    def read(self) -> Iterator[Catalog]:
        """The catalogue in one read transaction (a consistent snapshot)."""
        with self._open(write=False) as catalog:
            yield catalog

    @contextmanager
    def write(self) -> Iterator[Catalog]:
        """The catalogue in one write transaction, committed when the block ends.

        A :class:`Contention` raised inside rolls it back and propagates, for the
        caller to retry.
        """
        with self._open(write=True) as catalog:
            yield catalog

    @contextmanager
    def _open(self, write: bool) -> Iterator[Catalog]:
        connection, errors, catalog, empty = self._connect(write)
        try:
            if not empty:
                self.ensure_ready(catalog)
            with catalog.transaction(write):
                yield catalog
        except errors as exc:
            raise CatalogError(f"catalogue database error: {first_line(exc)}") from None
        finally:
            connection.close()

    def _connect(self, write: bool) -> tuple[Any, tuple[type[BaseException], ...], Catalog, bool]:
        """(connection, the driver's error classes, a Catalog on it, whether it is empty)."""
        if self._sqlite_path is not None:
            import sqlite3

            errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
            if not write and not self._sqlite_path.exists():
                from .schema import empty_sqlite

                connection = empty_sqlite()  # looking never creates a registry
                return connection, errors, self._catalog(connection, sqlite3), True
            self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                connection = sqlite3.connect(
                    self._sqlite_path, timeout=config.SQLITE_BUSY_TIMEOUT_S, isolation_level=None
                )
                for pragma in SQLITE_PRAGMAS:
                    connection.execute(pragma)
            except sqlite3.Error as exc:
                raise CatalogError(
                    f"cannot open the catalogue database {self._sqlite_path}: {exc}"
                ) from None
            return connection, errors, self._catalog(connection, sqlite3), False
        from sqlalchemy.exc import SQLAlchemyError

        dialect = self.engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"the catalogue runs on SQLite or PostgreSQL, not {dialect}: "
                "set REGISTRY_DATABASE_URL to a sqlite:/// or postgresql+psycopg:// URL"
            )
        dbapi = self.engine.dialect.loaded_dbapi
        try:
            connection = self.engine.raw_connection()
        except (dbapi.Error, SQLAlchemyError) as exc:  # the server is down, refuses us, ...
            detail = "; ".join(line.strip() for line in str(getattr(exc, "orig", exc)).splitlines())
            raise CatalogError(f"cannot open the catalogue database: {detail}") from None
        return (
            connection,
            (dbapi.Error,),
            self._catalog(connection, dbapi, sqlite=dialect == "sqlite"),
            False,
        )

    @staticmethod
    def _catalog(connection: Any, dbapi: Any, sqlite: bool = True) -> Catalog:
        return Catalog(connection, sqlite=sqlite, integrity=dbapi.IntegrityError)

    # -- the schema -----------------------------------------------------------------

    def ensure_ready(self, catalog: Catalog | None = None) -> None:
        """Make sure the schema is this release's: migrate an empty database, refuse others.

        The common case, a database at the right revision, costs one plain query;
        anything else goes through SQLAlchemy and Alembic.
        """
        if self._schema_checked:
            return
        if catalog is None:  # a writer about to start: ask on a connection of its own
            connection, _errors, catalog, _empty = self._connect(write=True)
            try:
                current = self._stamped(catalog)
            finally:
                connection.close()
        else:
            current = self._stamped(catalog)
        if current == schema_revision.SCHEMA_REVISION:
            self._schema_checked = True
            return
        from sqlalchemy.exc import OperationalError

        from . import schema

        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                schema.ensure_schema(self.engine)
                break
            except OperationalError as exc:
                # Two first-time users of a new SQLite file can meet while one of them
                # creates it (WAL set-up); SQLite then answers "locked" without waiting.
                if "locked" not in str(exc.orig) or attempt == _SCHEMA_ATTEMPTS - 1:
                    raise CatalogError(f"cannot open the catalogue database: {exc.orig}") from None
                time.sleep(0.05 * 2**attempt)
        self._schema_checked = True

    @staticmethod
    def _stamped(catalog: Catalog) -> str | None:
        """The revision stamped in the database, by one plain query; None when there is
        none (no version table yet, or not a registry database)."""
        try:
            with catalog.transaction():
                return catalog.revision()
        except Exception:  # the driver's error for a missing table, whichever driver
            return None

    def revision(self) -> str | None:
        """The schema revision stamped in the database (None if it has none yet)."""
        from . import schema

        with self.engine.connect() as connection:
            return schema.current_revision(connection)

    def upgrade(self) -> tuple[str | None, str | None]:
        """Apply pending migrations; returns (revision before, revision after)."""
        from . import schema

        result = schema.upgrade(self.engine)
        self._schema_checked = False
        return result


__all__ = [
    "SORTS",
    "Catalog",
    "Contention",
    "Gateway",
    "Location",
    "StoredBlob",
    "VersionRow",
]
