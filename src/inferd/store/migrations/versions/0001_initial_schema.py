"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('teams',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('team_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_team_id'), ['team_id'], unique=False)

    op.create_table('instances',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('team_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('region', sa.String(length=32), nullable=False),
    sa.Column('vpc_uuid', sa.String(length=36), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('live_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('pending_deployment_id', sa.String(length=36), nullable=True),
    sa.Column('access_tokens_sealed', sa.Text(), nullable=True),
    sa.Column('ca_cert_pem', sa.Text(), nullable=False),
    sa.Column('ca_key_sealed', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['team_id'], ['teams.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instances_region'), ['region'], unique=False)
        batch_op.create_index('ix_instances_team_created', ['team_id', 'created_at', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_instances_team_id'), ['team_id'], unique=False)
        batch_op.create_index('uq_instances_team_name_live', ['team_id', 'name'], unique=True,
                              sqlite_where=sa.text("status != 'deleting'"), postgresql_where=sa.text("status != 'deleting'"))

    op.create_table('accelerators',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('model_id', sa.String(length=36), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('accelerators', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_accelerators_instance_id'), ['instance_id'], unique=False)

    op.create_table('deployments',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instance_id', 'version', name='uq_deployments_instance_version')
    )
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deployments_instance_id'), ['instance_id'], unique=False)

    op.create_table('instance_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('instance_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['instance_id'], ['instances.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('instance_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instance_tokens_instance_id'), ['instance_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('instance_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_instance_tokens_instance_id'))

    op.drop_table('instance_tokens')
    with op.batch_alter_table('deployments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deployments_instance_id'))

    op.drop_table('deployments')
    with op.batch_alter_table('accelerators', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_accelerators_instance_id'))

    op.drop_table('accelerators')
    with op.batch_alter_table('instances', schema=None) as batch_op:
        batch_op.drop_index('uq_instances_team_name_live',
                            sqlite_where=sa.text("status != 'deleting'"), postgresql_where=sa.text("status != 'deleting'"))
        batch_op.drop_index(batch_op.f('ix_instances_team_id'))
        batch_op.drop_index('ix_instances_team_created')
        batch_op.drop_index(batch_op.f('ix_instances_region'))

    op.drop_table('instances')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_team_id'))

    op.drop_table('api_tokens')
    op.drop_table('teams')

