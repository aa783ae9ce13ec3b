"""Create SQLAlchemy engines tuned for the catalogue.

SQLite gets WAL mode (readers never block the writer), a busy timeout, foreign
keys, ``synchronous=FULL`` (a committed push survives power loss), and explicit
``BEGIN`` statements: write units of work open with ``BEGIN IMMEDIATE`` so two
processes pushing at once queue on the lock instead of failing with "database is
locked" when a read transaction tries to become a write transaction.

A SQLite file in a place this process may not write (a read-only mount) is opened
read-only (``_files.sqlite_read_only_uri``), so that ``db current`` still answers;
:func:`writer` refuses such a file up front with :class:`CatalogReadOnlyError`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .._files import sqlite_read_only_uri, sqlite_unwritable
from ..config import SQLITE_BUSY_TIMEOUT_S
from ..errors import ConfigurationError
from .rows import SQLITE_PRAGMAS, refusal

_BEGIN_OPTION = "registry_sqlite_begin"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for file-backed SQLite, the parent folder is created
    (where it may be), and a file that can only be read is opened read-only.

    Raises ConfigurationError for a URL SQLAlchemy cannot parse or has no driver for.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}: {exc}") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            # pool_pre_ping: a pooled connection the server dropped (a restart) is
            # replaced at checkout. The rollback a returned connection gets is ours
            # (_reset): SQLAlchemy's own logs a traceback when the server is gone.
            engine = create_engine(parsed, pool_pre_ping=True, pool_reset_on_return=None)
        except (ImportError, ArgumentError) as exc:
            raise ConfigurationError(f"cannot use database URL {url!r}: {exc}") from None
        event.listen(engine, "reset", _reset)
        return engine

    path = _sqlite_file(parsed.database)
    read_only = None
    if path is not None:
        read_only = sqlite_read_only_uri(path)
        if read_only is None:
            path.parent.mkdir(parents=True, exist_ok=True)
    if read_only is not None:
        uri = read_only
        engine = create_engine(
            parsed,
            creator=lambda: sqlite3.connect(
                uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
            ),
        )
    else:
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        # Hand transaction control to SQLAlchemy's "begin" event below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if read_only is None:
            cursor.execute("PRAGMA journal_mode=WAL")
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _reset(dbapi_connection: Any, record: Any, state: Any) -> None:
    """Roll back whatever a connection returned to the pool still holds (what
    SQLAlchemy's reset-on-return would do); a connection that cannot roll back lost its
    server, and is dropped from the pool quietly: its error was already reported by
    the operation that met it, and the next checkout connects afresh."""
    if state.transaction_was_reset or state.terminate_only or not state.asyncio_safe:
        return
    try:
        dbapi_connection.rollback()
    except Exception:
        if record is not None:
            record.invalidate()


def writer(engine: Engine) -> Engine:
    """The same engine, but transactions take SQLite's write lock up front.

    Raises CatalogReadOnlyError, before connecting, for a SQLite file this process may
    not write (the file, its WAL files or its folder; a read-only mount)."""
    if engine.dialect.name != "sqlite":
        return engine
    path = _sqlite_file(engine.url.database)
    if path is not None:
        problem = sqlite_unwritable(path)
        if problem is not None:
            raise refusal(problem, str(path))
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


def _sqlite_file(database: str | None) -> Path | None:
    """The file a SQLite URL's database names; None for memory and ``file:`` URIs."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
