"""controller details

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('serial', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('module', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('rack_slot', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('plc_mode', sa.String(length=32), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('plc_mode')
        batch_op.drop_column('rack_slot')
        batch_op.drop_column('module')
        batch_op.drop_column('serial')

