"""per-team quota overrides (instances, accelerator units per slug)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26

A team without a row uses the global defaults (INFERD_TEAM_MAX_INSTANCES, INFERD_TEAM_MAX_UNITS).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'team_quotas',
        sa.Column('team_id', sa.String(length=36), nullable=False),
        sa.Column('max_instances', sa.Integer(), nullable=True),
        sa.Column('max_units', sa.JSON(), nullable=True),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('team_id'),
    )


def downgrade() -> None:
    op.drop_table('team_quotas')
