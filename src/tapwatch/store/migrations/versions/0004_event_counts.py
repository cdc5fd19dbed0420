"""event repeat counts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('count', sa.BigInteger(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('last_ts', sa.DateTime(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('last_ts')
        batch_op.drop_column('count')

