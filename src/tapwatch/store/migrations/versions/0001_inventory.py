"""inventory: files, devices, addresses, connections

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key_mac', sa.String(length=17), nullable=False),
    sa.Column('key_ip', sa.String(length=45), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=True),
    sa.Column('ip', sa.String(length=45), nullable=True),
    sa.Column('is_gateway', sa.Boolean(), nullable=False),
    sa.Column('sensor', sa.String(length=255), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.Column('packets_sent', sa.BigInteger(), nullable=False),
    sa.Column('packets_received', sa.BigInteger(), nullable=False),
    sa.Column('bytes_sent', sa.BigInteger(), nullable=False),
    sa.Column('bytes_received', sa.BigInteger(), nullable=False),
    sa.Column('vlans', sa.JSON(), nullable=False),
    sa.Column('protocols', sa.JSON(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('vendor', sa.String(length=255), nullable=True),
    sa.Column('type', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=255), nullable=True),
    sa.Column('os', sa.String(length=255), nullable=True),
    sa.Column('firmware', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_mac', 'key_ip', name='uq_devices_key')
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_devices_ip'), ['ip'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_last_seen'), ['last_seen'], unique=False)
        batch_op.create_index(batch_op.f('ix_devices_mac'), ['mac'], unique=False)

    op.create_table('ingested_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('head_hash', sa.String(length=32), nullable=False),
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('sensor', sa.String(length=255), nullable=False),
    sa.Column('packets', sa.BigInteger(), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=True),
    sa.Column('last_seen', sa.DateTime(), nullable=True),
    sa.Column('ingested_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_hash')
    )
    with op.batch_alter_table('ingested_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ingested_files_head_hash'), ['head_hash'], unique=False)

    op.create_table('addresses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('ip', sa.String(length=45), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('flags', sa.Integer(), nullable=False),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.Column('packets_sent', sa.BigInteger(), nullable=False),
    sa.Column('packets_received', sa.BigInteger(), nullable=False),
    sa.Column('bytes_sent', sa.BigInteger(), nullable=False),
    sa.Column('bytes_received', sa.BigInteger(), nullable=False),
    sa.Column('vlans', sa.JSON(), nullable=False),
    sa.Column('protocols', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('mac', 'ip', name='uq_addresses_mac_ip')
    )
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_addresses_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_addresses_ip'), ['ip'], unique=False)

    op.create_table('connections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_mac', sa.String(length=17), nullable=False),
    sa.Column('client_ip', sa.String(length=45), nullable=False),
    sa.Column('server_mac', sa.String(length=17), nullable=False),
    sa.Column('server_ip', sa.String(length=45), nullable=False),
    sa.Column('transport', sa.String(length=16), nullable=False),
    sa.Column('server_port', sa.Integer(), nullable=False),
    sa.Column('protocol', sa.String(length=32), nullable=False),
    sa.Column('client_device_id', sa.Integer(), nullable=True),
    sa.Column('server_device_id', sa.Integer(), nullable=True),
    sa.Column('first_seen', sa.DateTime(), nullable=False),
    sa.Column('last_seen', sa.DateTime(), nullable=False),
    sa.Column('packets_c2s', sa.BigInteger(), nullable=False),
    sa.Column('bytes_c2s', sa.BigInteger(), nullable=False),
    sa.Column('packets_s2c', sa.BigInteger(), nullable=False),
    sa.Column('bytes_s2c', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['client_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['server_device_id'], ['devices.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('client_mac', 'client_ip', 'server_mac', 'server_ip', 'transport', 'server_port', name='uq_connections_key')
    )
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_connections_client_device_id'), ['client_device_id'], unique=False)
        batch_op.create_index('ix_connections_server', ['server_ip', 'server_port'], unique=False)
        batch_op.create_index(batch_op.f('ix_connections_server_device_id'), ['server_device_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('connections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_connections_server_device_id'))
        batch_op.drop_index('ix_connections_server')
        batch_op.drop_index(batch_op.f('ix_connections_client_device_id'))

    op.drop_table('connections')
    with op.batch_alter_table('addresses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_addresses_ip'))
        batch_op.drop_index(batch_op.f('ix_addresses_device_id'))

    op.drop_table('addresses')
    with op.batch_alter_table('ingested_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingested_files_head_hash'))

    op.drop_table('ingested_files')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_devices_mac'))
        batch_op.drop_index(batch_op.f('ix_devices_last_seen'))
        batch_op.drop_index(batch_op.f('ix_devices_ip'))

    op.drop_table('devices')
