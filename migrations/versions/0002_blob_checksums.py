"""Blob checksums: an XXH3-128 per stored tensor for fast load checks and dedup lookups.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 02:00:00

Existing blobs get NULL; ``registry db upgrade`` computes their checksums from the
tensor store after this migration (the migration itself only sees the database).
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("checksum", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_blobs_checksum"), ["checksum"], unique=False)


def downgrade() -> None:
    # Not in batch mode: on SQLite that copies the table, which the foreign keys from
    # `tensors` forbid; SQLite >= 3.35 and PostgreSQL both drop a column in place.
    op.drop_index(op.f("ix_blobs_checksum"), table_name="blobs")
    op.drop_column("blobs", "checksum")
