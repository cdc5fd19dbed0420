"""vulnerabilities: feed records, CVEs, affected-product rules, device matches

Revision ID: 0009v
Revises: 0008
Create Date: 2026-11-28 04:30:56.050900
"""

import sqlalchemy as sa
from alembic import op


revision = '0009v'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('vuln_records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('revision', sa.String(length=64), nullable=True),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('path', sa.String(length=4096), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=True),
    sa.Column('imported_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'key', name='uq_vuln_records_key')
    )
    op.create_table('vulnerabilities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cve_id', sa.String(length=64), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('cvss_score', sa.Float(), nullable=True),
    sa.Column('cvss_vector', sa.String(length=255), nullable=True),
    sa.Column('cvss_version', sa.String(length=8), nullable=True),
    sa.Column('score_source', sa.String(length=8), nullable=True),
    sa.Column('cwe', sa.String(length=64), nullable=True),
    sa.Column('published', sa.DateTime(), nullable=True),
    sa.Column('modified', sa.DateTime(), nullable=True),
    sa.Column('kev', sa.Boolean(), nullable=False),
    sa.Column('kev_added', sa.String(length=10), nullable=True),
    sa.Column('kev_due', sa.String(length=10), nullable=True),
    sa.Column('kev_action', sa.String(length=1024), nullable=True),
    sa.Column('kev_ransomware', sa.String(length=16), nullable=True),
    sa.Column('references', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cve_id')
    )
    op.create_table('device_vulnerabilities',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.Integer(), nullable=False),
    sa.Column('vulnerability_id', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.String(length=8), nullable=False),
    sa.Column('version_check', sa.String(length=24), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('product', sa.String(length=512), nullable=False),
    sa.Column('versions', sa.String(length=512), nullable=False),
    sa.Column('remediation', sa.String(length=2048), nullable=True),
    sa.Column('first_matched', sa.DateTime(), nullable=False),
    sa.Column('last_matched', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vulnerability_id'], ['vulnerabilities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'vulnerability_id', name='uq_device_vulnerabilities')
    )
    with op.batch_alter_table('device_vulnerabilities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_device_vulnerabilities_device_id'), ['device_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_device_vulnerabilities_vulnerability_id'), ['vulnerability_id'], unique=False)

    op.create_table('vuln_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('vulnerability_id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('vendor_key', sa.String(length=128), nullable=False),
    sa.Column('vendor', sa.String(length=255), nullable=False),
    sa.Column('product', sa.String(length=512), nullable=False),
    sa.Column('versions', sa.String(length=512), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('remediations', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['vuln_records.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vulnerability_id'], ['vulnerabilities.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('vuln_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_vuln_rules_record_id'), ['record_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_vuln_rules_vendor_key'), ['vendor_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_vuln_rules_vulnerability_id'), ['vulnerability_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('vuln_rules', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vuln_rules_vulnerability_id'))
        batch_op.drop_index(batch_op.f('ix_vuln_rules_vendor_key'))
        batch_op.drop_index(batch_op.f('ix_vuln_rules_record_id'))

    op.drop_table('vuln_rules')
    with op.batch_alter_table('device_vulnerabilities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_device_vulnerabilities_vulnerability_id'))
        batch_op.drop_index(batch_op.f('ix_device_vulnerabilities_device_id'))

    op.drop_table('device_vulnerabilities')
    op.drop_table('vulnerabilities')
    op.drop_table('vuln_records')
