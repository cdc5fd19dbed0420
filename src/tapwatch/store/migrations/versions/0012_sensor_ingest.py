"""sensor ingest: devices whose identity waits for the end of a sensor's flush

Revision ID: 0012s
Revises: 0010s
Create Date: 2026-11-28 10:55:00.000000
"""

import sqlalchemy as sa
from alembic import op


revision = '0012s'
down_revision = '0010s'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sensor_identity_pending',
    sa.Column('sensor_id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('sensor_id', 'device_id')
    )


def downgrade() -> None:
    op.drop_table('sensor_identity_pending')
