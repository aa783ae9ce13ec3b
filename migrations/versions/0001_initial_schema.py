"""Initial schema: models, versions, tensors, blobs, packs, tags, aliases.

Revision ID: 0001
Revises:
Create Date: 2026-11-28 15:20:05.620550
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('last_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', name=op.f('uq_models_name'))
    )
    op.create_table('packs',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('nbytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_packs'))
    )
    op.create_table('blobs',
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('pack_id', sa.String(length=64), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('nbytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['pack_id'], ['packs.id'], name=op.f('fk_blobs_pack_id_packs')),
    sa.PrimaryKeyConstraint('digest', name=op.f('pk_blobs'))
    )
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_blobs_pack_id'), ['pack_id'], unique=False)

    op.create_table('versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('arch', sa.String(length=255), nullable=False),
    sa.Column('arch_kwargs', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('total_bytes', sa.BigInteger(), nullable=False),
    sa.Column('param_count', sa.BigInteger(), nullable=False),
    sa.Column('tensor_count', sa.Integer(), nullable=False),
    sa.Column('torch_version', sa.String(length=64), nullable=False),
    sa.Column('source_format', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_versions_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['versions.id'], name=op.f('fk_versions_parent_id_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_versions')),
    sa.UniqueConstraint('model_id', 'digest', name=op.f('uq_versions_model_id_digest')),
    sa.UniqueConstraint('model_id', 'version', name=op.f('uq_versions_model_id_version'))
    )
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_versions_arch'), ['arch'], unique=False)
        batch_op.create_index(batch_op.f('ix_versions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_versions_digest'), ['digest'], unique=False)

    op.create_table('aliases',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_aliases_model_id_models'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], name=op.f('fk_aliases_version_id_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model_id', 'alias', name=op.f('pk_aliases'))
    )
    op.create_table('tags',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=128), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], name=op.f('fk_tags_version_id_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'key', name=op.f('pk_tags'))
    )
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tags_key_value'), ['key', 'value'], unique=False)

    op.create_table('tensors',
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=1024), nullable=False),
    sa.Column('dtype', sa.String(length=32), nullable=False),
    sa.Column('shape', sa.JSON(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('nbytes', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['digest'], ['blobs.digest'], name=op.f('fk_tensors_digest_blobs')),
    sa.ForeignKeyConstraint(['version_id'], ['versions.id'], name=op.f('fk_tensors_version_id_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'position', name=op.f('pk_tensors')),
    sa.UniqueConstraint('version_id', 'name', name=op.f('uq_tensors_version_id_name'))
    )
    with op.batch_alter_table('tensors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tensors_digest'), ['digest'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tensors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tensors_digest'))

    op.drop_table('tensors')
    with op.batch_alter_table('tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tags_key_value'))

    op.drop_table('tags')
    op.drop_table('aliases')
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_versions_digest'))
        batch_op.drop_index(batch_op.f('ix_versions_created_at'))
        batch_op.drop_index(batch_op.f('ix_versions_arch'))

    op.drop_table('versions')
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_blobs_pack_id'))

    op.drop_table('blobs')
    op.drop_table('packs')
    op.drop_table('models')
