"""device management and alerts

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sa.String(length=512), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=255), nullable=False),
    sa.Column('engine', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('mitre', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('protocol', sa.String(length=32), nullable=True),
    sa.Column('src_mac', sa.String(length=17), nullable=True),
    sa.Column('src_ip', sa.String(length=45), nullable=True),
    sa.Column('dst_mac', sa.String(length=17), nullable=True),
    sa.Column('dst_ip', sa.String(length=45), nullable=True),
    sa.Column('src_device_id', sa.Integer(), nullable=True),
    sa.Column('dst_device_id', sa.Integer(), nullable=True),
    sa.Column('sensor', sa.String(length=255), nullable=True),
    sa.Column('first_detected', sa.DateTime(), nullable=False),
    sa.Column('last_detected', sa.DateTime(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('closed_reason', sa.String(length=16), nullable=True),
    sa.ForeignKeyConstraint(['dst_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['src_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_alerts_dst_device_id'), ['dst_device_id'], unique=False)
        batch_op.create_index('ix_alerts_key_status', ['key', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_last_detected'), ['last_detected'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_src_device_id'), ['src_device_id'], unique=False)
        batch_op.create_index('ix_alerts_status_severity', ['status', 'severity'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_type'), ['type'], unique=False)

    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('authorized', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('is_new', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('importance', sa.String(length=8), nullable=False, server_default='normal'))
        batch_op.add_column(sa.Column('programming_device', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('description', sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column('location', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('tags', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('site', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('zone', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('endpoint_agent', sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f('ix_devices_site'), ['site'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_site'))
        batch_op.drop_column('endpoint_agent')
        batch_op.drop_column('zone')
        batch_op.drop_column('site')
        batch_op.drop_column('tags')
        batch_op.drop_column('location')
        batch_op.drop_column('description')
        batch_op.drop_column('programming_device')
        batch_op.drop_column('importance')
        batch_op.drop_column('is_new')
        batch_op.drop_column('authorized')

    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_type'))
        batch_op.drop_index('ix_alerts_status_severity')
        batch_op.drop_index(batch_op.f('ix_alerts_src_device_id'))
        batch_op.drop_index(batch_op.f('ix_alerts_last_detected'))
        batch_op.drop_index('ix_alerts_key_status')
        batch_op.drop_index(batch_op.f('ix_alerts_dst_device_id'))

    op.drop_table('alerts')
