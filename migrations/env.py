"""Alembic environment for the registry catalogue.

The registry runs migrations programmatically, passing an open connection in
``config.attributes["connection"]``. Run from the command line (``alembic`` with the
project's ``alembic.ini``), it connects to the database the registry settings name.
"""

from __future__ import annotations

from alembic import context

from registry.catalog.models import Base

target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    from registry.config import resolve

    context.configure(
        url=resolve().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from registry.catalog.engine import make_engine, writer
    from registry.config import resolve

    engine = make_engine(resolve().database_url)
    with writer(engine).connect() as connection:
        _run(connection)
        connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
