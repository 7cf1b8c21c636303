"""usage indexes for materialised metric windows; the usage sync a cache reflects

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_usage_metric_day", table_name="usage")
    # covering, in account order per metric: a window aggregates with no sort and no table lookups
    op.create_index("ix_usage_metric_account_day", "usage", ["metric", "account_id", "day", "value"])
    op.create_index("ix_usage_synced_at", "usage", ["synced_at"])
    with op.batch_alter_table("metric_caches") as batch:
        batch.add_column(sa.Column("usage_stamp", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metric_caches") as batch:
        batch.drop_column("usage_stamp")
    op.drop_index("ix_usage_synced_at", table_name="usage")
    op.drop_index("ix_usage_metric_account_day", table_name="usage")
    op.create_index("ix_usage_metric_day", "usage", ["metric", "day", "account_id"])
