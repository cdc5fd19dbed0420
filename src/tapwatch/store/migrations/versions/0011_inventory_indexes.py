"""inventory indexes: the columns the console filters and sorts 100,000 devices by

Revision ID: 0011x
Revises: 0010p
Create Date: 2026-11-28 07:46:38.982989
"""

from alembic import op


revision = '0011x'
down_revision = '0010p'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index('ix_devices_device_class', ['device_class'], unique=False)
        batch_op.create_index('ix_devices_first_seen', ['first_seen'], unique=False)
        batch_op.create_index('ix_devices_name', ['name'], unique=False)
        batch_op.create_index('ix_devices_type', ['type'], unique=False)
        batch_op.create_index('ix_devices_vendor', ['vendor'], unique=False)
        batch_op.create_index('ix_devices_zone', ['zone'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_zone')
        batch_op.drop_index('ix_devices_vendor')
        batch_op.drop_index('ix_devices_type')
        batch_op.drop_index('ix_devices_name')
        batch_op.drop_index('ix_devices_first_seen')
        batch_op.drop_index('ix_devices_device_class')
