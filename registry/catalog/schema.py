"""Keep the database schema at this release's revision, through Alembic only.

A new, empty database is migrated automatically on first use; an existing one that
is behind raises :class:`SchemaOutOfDateError` telling the user to run
``registry db upgrade``. The migration scripts live in ``migrations/`` at the top of a
checkout (where ``alembic -c alembic.ini`` finds them) and ship inside the wheel as
``registry/migrations``, so this works from an installed wheel too.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect

from ..errors import CatalogError, SchemaOutOfDateError
from . import revision as _revision
from .engine import writer
from .revision import SCHEMA_REVISION

__all__ = ["SCHEMA_REVISION", "ensure_schema", "upgrade", "current_revision"]

VERSION_TABLE = "alembic_version"
_MIGRATION_LOCK_ID = 0x7265_6769_7374  # "regist"


def migrations_path() -> Path:
    """Alembic's script folder: inside the installed package, else the checkout's top level."""
    packaged = Path(str(files("registry") / "migrations"))
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: Connection | None = None):  # type: ignore[no-untyped-def]
    """An Alembic Config for the packaged migrations, bound to ``connection`` if given."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_path()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in the database, or None for an unversioned database."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").all()
    return rows[0][0] if rows else None


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Run pending migrations in one transaction; return (revision before, after)."""
    from alembic import command

    with writer(engine).connect() as connection:
        with connection.begin():
            _lock_migrations(connection)
            before = current_revision(connection)
            command.upgrade(alembic_config(connection), revision)
            after = current_revision(connection)
    return before, after


def _lock_migrations(connection: Connection) -> None:
    """Hold the migration lock until the transaction ends. SQLite's BEGIN IMMEDIATE
    already serialises migrations; PostgreSQL needs a lock so that two first-time
    users do not both create the schema."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse a database at another revision.

    Several processes may meet an empty database at once: each looks again under the
    migration lock, so exactly one creates the schema and the others find it made
    (never "tables but no version": that look and the creation are one transaction).
    """
    with engine.connect() as connection:
        revision = current_revision(connection)
    if revision is None:
        revision = _create_schema(engine)
        if revision is None:
            return
    _check_revision(revision)


def _create_schema(engine: Engine) -> str | None:
    """Under the migration lock: migrate the database if it is still empty (None), else
    the revision another process stamped meanwhile."""
    from alembic import command

    with writer(engine).connect() as connection:
        with connection.begin():
            _lock_migrations(connection)
            revision = current_revision(connection)
            if revision is not None:
                return revision
            tables = set(inspect(connection).get_table_names()) - {VERSION_TABLE}
            if tables:
                raise CatalogError(
                    f"database {engine.url.render_as_string(hide_password=True)} has tables "
                    f"({', '.join(sorted(tables)[:5])}) but no registry schema version; "
                    "point REGISTRY_DATABASE_URL at an empty or registry database"
                )
            command.upgrade(alembic_config(connection), "head")
    return None


def _check_revision(revision: str) -> None:
    """SchemaOutOfDateError unless ``revision`` is the one this release needs."""
    required = _revision.SCHEMA_REVISION
    if revision == required:
        return
    from alembic.script import ScriptDirectory

    try:
        known = ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except Exception:  # alembic raises several types for an unknown revision id
        known = False
    if not known:
        raise SchemaOutOfDateError(
            f"database schema revision {revision} is newer than this version of registry "
            f"understands ({required}); upgrade the registry package"
        )
    raise SchemaOutOfDateError(
        f"database schema is out of date (revision {revision}, this registry needs "
        f"{required}); run `registry db upgrade`"
    )


def empty_sqlite() -> Any:
    """An in-memory SQLite catalogue with this release's schema and nothing in it.

    Reading a registry whose database file does not exist answers from this, so that
    looking (``list``, ``show``, a mistyped ``REGISTRY_HOME``) never creates a registry;
    the first write creates the file through the migrations.
    """
    import sqlite3

    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from .models import Base

    connection = sqlite3.connect(":memory:", isolation_level=None)
    dialect = sqlite.dialect()
    for table in Base.metadata.sorted_tables:
        connection.execute(str(CreateTable(table).compile(dialect=dialect)))
        for index in table.indexes:
            connection.execute(str(CreateIndex(index).compile(dialect=dialect)))
    connection.execute(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL)")
    connection.execute(f"INSERT INTO {VERSION_TABLE} VALUES (?)", (SCHEMA_REVISION,))
    return connection
