"""Provenance: who pushed each version and from where, and the history of later changes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 10:00:00

``versions`` gains who pushed it and on which host (``pushed_by``, ``pushed_host``),
the pushed file (``source_path``), the git commit of the working folder and whether
its tracked files had changes (``git_commit``, ``git_dirty``), the registry's version
(``registry_version``), for an imported version when it was first created in the
registry it came from (``origin_created_at``), and the module that registered an
architecture name in code (``arch_module``). Versions pushed before this revision
have none of these recorded (NULL).

``events`` records every change that is not a push (tags, aliases, descriptions,
removals, imports): who, when, on which host, and the state before and after. Its
rows keep the model's name and the version's number, so they outlive the version;
``version_id`` is cleared when the version is removed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_VERSION_COLUMNS = (
    "pushed_by",
    "pushed_host",
    "source_path",
    "git_commit",
    "git_dirty",
    "registry_version",
    "origin_created_at",
    "arch_module",
)


def upgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pushed_by", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("pushed_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("source_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("git_commit", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("git_dirty", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("registry_version", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("origin_created_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("arch_module", sa.String(length=255), nullable=True))
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["versions.id"],
            name=op.f("fk_events_version_id_versions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_name_at"), ["name", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_version_id"), ["version_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_events_version_id"), table_name="events")
    op.drop_index(op.f("ix_events_at"), table_name="events")
    op.drop_index(op.f("ix_events_name_at"), table_name="events")
    op.drop_table("events")
    # Not in batch mode: on SQLite that copies the tables, which the foreign keys
    # forbid; SQLite >= 3.35 and PostgreSQL both drop a column in place.
    for column in reversed(_VERSION_COLUMNS):
        op.drop_column("versions", column)
