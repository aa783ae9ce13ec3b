"""Packs being written: the rows that tell gc which unnamed pack files are in flight.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 17:00:00

``pending_packs`` holds one row per pack a push, an import or a gc is writing, from
before its first byte reaches the store until the transaction that names it (or the
writer gives up). gc collects a file no version names at once when its row's writer
is known to be gone (a process on gc's machine that no longer exists), so crashed
pushes stop holding space for gc's grace hour. Databases upgraded to this revision
start with none: files left by earlier crashes are still collected after the grace.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pending_packs",
        sa.Column("pack_id", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("boot_id", sa.String(length=64), nullable=True),
        sa.Column("pid_ns", sa.String(length=64), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("pid_started", sa.BigInteger(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pack_id", name=op.f("pk_pending_packs")),
    )


def downgrade() -> None:
    op.drop_table("pending_packs")
