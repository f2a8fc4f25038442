"""change feed: instance_changes filled by triggers; per-token rate limits of instances

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27

Readers (gateway, controller) reload only the instances that changed, instead of everything on
a timer (see inferd.store.changes). Triggers, not application code, append the instance id, so
that no write path can forget: instances INSERT/DELETE and UPDATE of what routing depends on,
replicas INSERT/DELETE and UPDATE of status or endpoint, instance_tokens INSERT/DELETE. WHEN
clauses keep an update that leaves those columns as they were from firing. On PostgreSQL the
trigger function also sends NOTIFY inferd_changes (payload: the instance id), delivered at commit.

SQLite drops a table's triggers with the table: a later migration that batch-alters instances,
replicas or instance_tokens on SQLite (a table copy) must create these triggers again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_INSTANCE_COLUMNS = ('status', 'live_deployment_id', 'pending_deployment_id', 'version', 'token_rpm', 'token_tpm')
_REPLICA_COLUMNS = ('status', 'endpoint')

# (trigger name, table, event, column holding the instance id, watched columns for UPDATE)
_TRIGGERS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ('inferd_changes_instances_ins', 'instances', 'INSERT', 'id', ()),
    ('inferd_changes_instances_upd', 'instances', 'UPDATE', 'id', _INSTANCE_COLUMNS),
    ('inferd_changes_instances_del', 'instances', 'DELETE', 'id', ()),
    ('inferd_changes_replicas_ins', 'replicas', 'INSERT', 'instance_id', ()),
    ('inferd_changes_replicas_upd', 'replicas', 'UPDATE', 'instance_id', _REPLICA_COLUMNS),
    ('inferd_changes_replicas_del', 'replicas', 'DELETE', 'instance_id', ()),
    ('inferd_changes_tokens_ins', 'instance_tokens', 'INSERT', 'instance_id', ()),
    ('inferd_changes_tokens_del', 'instance_tokens', 'DELETE', 'instance_id', ()),
)

_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION inferd_note_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := to_jsonb(OLD) ->> TG_ARGV[0];
    ELSE
        changed := to_jsonb(NEW) ->> TG_ARGV[0];
    END IF;
    INSERT INTO instance_changes (instance_id, changed_at) VALUES (changed, timezone('utc', clock_timestamp()));
    PERFORM pg_notify('inferd_changes', changed);
    RETURN NULL;
END
$$
"""


def _when(columns: tuple[str, ...], distinct: str) -> str:
    return ' OR '.join(f'OLD.{c} {distinct} NEW.{c}' for c in columns)


def _sqlite_trigger(name: str, table: str, event: str, column: str, watched: tuple[str, ...]) -> str:
    row = 'OLD' if event == 'DELETE' else 'NEW'
    on = f"UPDATE OF {', '.join(watched)}" if watched else event
    when = f'WHEN {_when(watched, "IS NOT")}' if watched else ''
    return (
        f'CREATE TRIGGER {name} AFTER {on} ON {table} FOR EACH ROW {when} BEGIN '
        f"INSERT INTO instance_changes (instance_id, changed_at) "
        f"VALUES ({row}.{column}, strftime('%Y-%m-%d %H:%M:%f000', 'now')); END"
    )


def _pg_trigger(name: str, table: str, event: str, column: str, watched: tuple[str, ...]) -> str:
    on = f"UPDATE OF {', '.join(watched)}" if watched else event
    when = f'WHEN ({_when(watched, "IS DISTINCT FROM")})' if watched else ''
    return f"CREATE TRIGGER {name} AFTER {on} ON {table} FOR EACH ROW {when} EXECUTE FUNCTION inferd_note_change('{column}')"


def upgrade() -> None:
    with op.batch_alter_table('instances') as batch:
        batch.add_column(sa.Column('token_rpm', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('token_tpm', sa.Integer(), nullable=True))
    op.create_table(
        'instance_changes',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), primary_key=True, autoincrement=True),
        sa.Column('instance_id', sa.String(length=36), nullable=False),
        sa.Column('changed_at', sa.DateTime(), nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_instance_changes_changed_at', 'instance_changes', ['changed_at'])
    postgres = op.get_bind().dialect.name == 'postgresql'
    if postgres:
        op.execute(_PG_FUNCTION)
    for trigger in _TRIGGERS:
        op.execute(_pg_trigger(*trigger) if postgres else _sqlite_trigger(*trigger))


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    for name, table, *_ in _TRIGGERS:
        op.execute(f'DROP TRIGGER IF EXISTS {name} ON {table}' if postgres else f'DROP TRIGGER IF EXISTS {name}')
    if postgres:
        op.execute('DROP FUNCTION IF EXISTS inferd_note_change()')
    op.drop_index('ix_instance_changes_changed_at', table_name='instance_changes')
    op.drop_table('instance_changes')
    with op.batch_alter_table('instances') as batch:
        batch.drop_column('token_tpm')
        batch.drop_column('token_rpm')
