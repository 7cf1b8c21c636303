"""what changed since a tick: synced_at indexes, the latest sync that removed rows, per-playbook scan marks

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("accounts", "contacts", "goals"):
        op.create_index(f"ix_{table}_synced_at", table, ["synced_at"])
    with op.batch_alter_table("sync_state") as batch:
        batch.add_column(sa.Column("removed_stamp", sa.DateTime(), nullable=True))
    with op.batch_alter_table("playbook_state") as batch:
        batch.add_column(sa.Column("scan", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("playbook_state") as batch:
        batch.drop_column("scan")
    with op.batch_alter_table("sync_state") as batch:
        batch.drop_column("removed_stamp")
    for table in ("accounts", "contacts", "goals"):
        op.drop_index(f"ix_{table}_synced_at", table_name=table)
