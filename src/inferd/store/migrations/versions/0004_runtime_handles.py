"""replicas run through a runtime: opaque handles, nodes, endpoints; accelerator units; capacity

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26

Replicas no longer record a local pid: a runtime (local processes or Ray actors) gives an
opaque handle, the node and the endpoint. Stop 0.1.0's ``inferd serve`` before upgrading
(it stops its replicas and marks them ``stopped``); the new controller starts them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('replicas') as batch:
        for column in ('host', 'port', 'health_path', 'pid', 'pid_started'):
            batch.drop_column(column)
        batch.add_column(sa.Column('handle', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('node', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('endpoint', sa.String(length=255), nullable=True))
        batch.add_column(sa.Column('phase', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('detail', sa.Text(), nullable=True))
        batch.add_column(sa.Column('phase_since', sa.DateTime(), nullable=True))
        batch.add_column(sa.Column('stop_requested_at', sa.DateTime(), nullable=True))
    op.execute("UPDATE replicas SET status = 'stopped' WHERE status IN ('starting', 'ready')")
    with op.batch_alter_table('accelerators') as batch:
        batch.add_column(sa.Column('unit', sa.Integer(), nullable=True))
    op.create_table(
        'capacity',
        sa.Column('slug', sa.String(length=64), nullable=False),
        sa.Column('region', sa.String(length=32), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('slug', 'region'),
    )


def downgrade() -> None:
    op.drop_table('capacity')
    with op.batch_alter_table('accelerators') as batch:
        batch.drop_column('unit')
    with op.batch_alter_table('replicas') as batch:
        for column in ('handle', 'node', 'endpoint', 'phase', 'detail', 'phase_since', 'stop_requested_at'):
            batch.drop_column(column)
        batch.add_column(sa.Column('host', sa.String(length=255), nullable=False, server_default='127.0.0.1'))
        batch.add_column(sa.Column('port', sa.Integer(), nullable=False, server_default='0'))
        batch.add_column(sa.Column('health_path', sa.String(length=255), nullable=False, server_default='/health'))
        batch.add_column(sa.Column('pid', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('pid_started', sa.String(length=32), nullable=True))
