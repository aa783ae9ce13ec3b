"""Fidelity: storage sharing between a version's tensors, and the metadata its source carried.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 10:00:00

``tensors.storage_group`` / ``tensors.storage_view`` record which keys were one storage
at push (tied weights) and where each sat in it; ``versions.state_metadata`` keeps the
state dict's ``_metadata`` (module versions), ``versions.file_metadata`` a safetensors
file's header metadata, and ``versions.assumed_metadata`` the module versions load gives
an architecture that refuses weights without any. Versions pushed before this revision
have none of these recorded (NULL): their keys load as independent tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("state_metadata", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("file_metadata", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("assumed_metadata", sa.JSON(), nullable=True))
    with op.batch_alter_table("tensors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("storage_group", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("storage_view", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Not in batch mode: on SQLite that copies the tables, which the foreign keys
    # forbid; SQLite >= 3.35 and PostgreSQL both drop a column in place.
    op.drop_column("tensors", "storage_view")
    op.drop_column("tensors", "storage_group")
    op.drop_column("versions", "assumed_metadata")
    op.drop_column("versions", "file_metadata")
    op.drop_column("versions", "state_metadata")
