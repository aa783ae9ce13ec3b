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
that a pipeline does not retry becomes one too. A write the database refuses (a
SELECT-only role, a read-only file) is :class:`CatalogReadOnlyError`, its transaction
rolled back; ``check_writable`` asks beforehand, for operations that write the store
first. Must never import torch, or SQLAlchemy at module level.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .. import config
from .._files import sqlite_read_only_uri, sqlite_unwritable
from ..errors import CatalogError, ConfigurationError
from ..liveness import this_process
from . import revision as schema_revision
from .access import AccessQueries
from .blobs import TENSOR_SORTS, BlobQueries
from .history import HistoryQueries
from .labels import LabelQueries
from .pending import PackCollected, PendingPack
from .rows import (
    SQLITE_PRAGMAS,
    Contention,
    Location,
    StoredBlob,
    VersionRow,
    _as_catalog_error,
    first_line,
    is_refusal,
    refusal,
)
from .versions import MODEL_SORTS, SORTS, VersionQueries

if TYPE_CHECKING:
    from sqlalchemy import Engine

_SCHEMA_ATTEMPTS = 6


class Catalog(VersionQueries, BlobQueries, LabelQueries, HistoryQueries, AccessQueries):
    """Every catalogue statement, on one open connection in one transaction.

    ``versions.VersionQueries`` finds, lists, adds and removes versions;
    ``blobs.BlobQueries`` knows where tensor bytes are (with ``pending.PendingQueries``,
    the packs being written); ``labels.LabelQueries``
    tags, aliases and descriptions; ``history.HistoryQueries`` the events;
    ``access.AccessQueries`` who may write, and the grants of a read-only role.
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
    def write(self, durable: bool = True) -> Iterator[Catalog]:
        """The catalogue in one write transaction, committed when the block ends.

        A :class:`Contention` raised inside rolls it back and propagates, for the
        caller to retry. ``durable=False`` commits without waiting for the disk
        (SQLite's ``synchronous=NORMAL`` in WAL mode, PostgreSQL's
        ``synchronous_commit=off``): the commit survives the process being killed,
        not the machine losing power. Only for rows that a power loss may drop (a
        ``pending_packs`` row: its writer dies with the machine, and a file without
        a row waits for gc's grace).
        """
        with self._open(write=True, durable=durable) as catalog:
            yield catalog

    @contextmanager
    def _open(self, write: bool, durable: bool = True) -> Iterator[Catalog]:
        connection, errors, catalog, empty = self._connect(write)
        try:
            if not empty:
                self.ensure_ready(catalog)
            if not durable and catalog.sqlite:
                catalog.execute("PRAGMA synchronous=NORMAL")
            with catalog.transaction(write):
                if not durable and not catalog.sqlite:
                    catalog.execute("SET LOCAL synchronous_commit TO OFF")
                yield catalog
        except errors as exc:  # raised outside a statement: at commit, say
            raise _as_catalog_error(exc, self.where) from None
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
            # A WAL database in a folder this process may not write (a read-only mount)
            # opens only read-only and immutable; writes then fail as refused.
            read_only = None if write else sqlite_read_only_uri(self._sqlite_path)
            try:
                if read_only is None:
                    self._sqlite_path.parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(
                    read_only or self._sqlite_path,
                    uri=read_only is not None,
                    timeout=config.SQLITE_BUSY_TIMEOUT_S,
                    isolation_level=None,
                )
                for pragma in SQLITE_PRAGMAS:
                    connection.execute(pragma)
            except (sqlite3.Error, OSError) as exc:
                problem = sqlite_unwritable(self._sqlite_path) if write else None
                if problem is not None:
                    raise refusal(problem, self.where) from None
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

    def _catalog(self, connection: Any, dbapi: Any, sqlite: bool = True) -> Catalog:
        return Catalog(connection, sqlite=sqlite, errors=dbapi.Error, where=self.where)

    @cached_property
    def where(self) -> str:
        """The database as messages name it: a SQLite file's path, else the URL
        without its password (and without the driver's name)."""
        if self._sqlite_path is not None:
            return str(self._sqlite_path)
        from sqlalchemy.engine import make_url

        try:
            url = make_url(self.url)
        except Exception:  # an invalid URL: connecting says what is wrong with it
            return "the catalogue database"
        return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)

    # -- packs being written ---------------------------------------------------------

    def hold_pack(self, pack_id: str, purpose: str) -> None:
        """Record, in a transaction of its own, that this process is about to write pack
        ``pack_id`` for ``purpose`` (``push``, ``import``), so that gc leaves the file
        alone while this process runs and collects it as soon as it is gone. The
        transaction that names the pack takes the row back (``Catalog.add_pack``)."""
        writer = this_process()
        with self.write(durable=False) as catalog:  # its writer dies with the machine
            catalog.add_pending(pack_id, purpose, writer)

    def release_pack(self, pack_id: str) -> None:
        """Forget pack ``pack_id``'s row once its writer gave it up (and removed what it
        wrote). Best effort: a row left behind (the catalogue out of reach) is dropped
        by gc once this process is gone."""
        try:
            with self.write(durable=False) as catalog:
                catalog.drop_pending([pack_id])
        except CatalogError:
            pass

    # -- access -------------------------------------------------------------------

    def check_writable(self) -> None:
        """Raise CatalogReadOnlyError unless this catalogue accepts writes.

        Cheap (one query, no lock), so that an operation which writes the store before
        the catalogue (a push writes its pack first, gc rewrites packs, an import
        writes the bundle's tensors) can ask before it changes anything. PostgreSQL:
        the role's privileges on every table a write touches and on their sequences,
        and that its transactions may write (not a read-only role or standby). SQLite:
        that the file (and its folder, where the journal goes) may be written; a
        file that does not exist yet needs a folder it can be created in.
        """
        if self._sqlite_path is not None:
            problem = sqlite_unwritable(self._sqlite_path)
        else:
            with self._open(write=True) as catalog:
                problem = catalog.write_refusal()
        if problem is not None:
            raise refusal(problem, self.where)

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
        from sqlalchemy.exc import DBAPIError, OperationalError

        from . import schema

        for attempt in range(_SCHEMA_ATTEMPTS):
            try:
                schema.ensure_schema(self.engine)
                break
            except DBAPIError as exc:
                if is_refusal(exc.orig):  # a read-only role, first on an empty database
                    raise refusal(
                        f"cannot create the registry's tables: {first_line(exc.orig)}",
                        self.where,
                    ) from None
                if not isinstance(exc, OperationalError):
                    raise
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
    "MODEL_SORTS",
    "SORTS",
    "TENSOR_SORTS",
    "Catalog",
    "Contention",
    "Gateway",
    "Location",
    "PackCollected",
    "PendingPack",
    "StoredBlob",
    "VersionRow",
]
