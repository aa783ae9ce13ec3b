"""Create SQLAlchemy engines tuned for the catalogue.

SQLite gets WAL mode (readers never block the writer), a busy timeout, foreign
keys, ``synchronous=FULL`` (a committed push survives power loss), and explicit
``BEGIN`` statements: write units of work open with ``BEGIN IMMEDIATE`` so two
processes pushing at once queue on the lock instead of failing with "database is
locked" when a read transaction tries to become a write transaction.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ..config import SQLITE_BUSY_TIMEOUT_S
from ..errors import ConfigurationError
from .rows import SQLITE_PRAGMAS

_BEGIN_OPTION = "registry_sqlite_begin"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for file-backed SQLite, the parent folder is created."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except (ImportError, ArgumentError) as exc:
            raise ConfigurationError(f"cannot use database URL {url!r}: {exc}") from None

    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, but transactions take SQLite's write lock up front."""
    if engine.dialect.name != "sqlite":
        return engine
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
