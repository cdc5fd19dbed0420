"""events

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('ts', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('protocol', sa.String(length=32), nullable=False),
    sa.Column('src_mac', sa.String(length=17), nullable=False),
    sa.Column('src_ip', sa.String(length=45), nullable=False),
    sa.Column('dst_mac', sa.String(length=17), nullable=False),
    sa.Column('dst_ip', sa.String(length=45), nullable=False),
    sa.Column('src_device_id', sa.Integer(), nullable=True),
    sa.Column('dst_device_id', sa.Integer(), nullable=True),
    sa.Column('file_id', sa.Integer(), nullable=True),
    sa.Column('packet', sa.BigInteger(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['dst_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['file_id'], ['ingested_files.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['src_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_events_dst_device_id'), ['dst_device_id'], unique=False)
        batch_op.create_index('ix_events_kind_time', ['kind', 'ts'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_src_device_id'), ['src_device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_events_ts'), ['ts'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_events_ts'))
        batch_op.drop_index(batch_op.f('ix_events_src_device_id'))
        batch_op.drop_index('ix_events_kind_time')
        batch_op.drop_index(batch_op.f('ix_events_dst_device_id'))

    op.drop_table('events')
