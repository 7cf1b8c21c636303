"""fewer lookups per changed row: usage without rowid on SQLite (one B-tree keyed by account, metric and day,
not a row table plus a key index; its secondary indexes then hold the key, so reading which usage rows a
sync wrote is an index-only scan of ix_usage_synced_at), and the indexes a tick reads changed subjects
through carry the subject id (synced_at, id) and (account_id, id), so those reads never visit the rows

Revision ID: 0008
Revises: 0007
"""
from __future__ import annotations

import logging

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

USAGE = ("CREATE TABLE usage_new (account_id VARCHAR NOT NULL, metric VARCHAR NOT NULL, day DATE NOT NULL, "
         "value FLOAT, synced_at DATETIME, PRIMARY KEY (account_id, metric, day)){suffix}")
COVERING = {"ix_accounts_synced_at": ("accounts", "synced_at"), "ix_contacts_synced_at": ("contacts", "synced_at"),
            "ix_goals_synced_at": ("goals", "synced_at"), "ix_contacts_account": ("contacts", "account_id"),
            "ix_goals_account": ("goals", "account_id")}


def upgrade() -> None:
    _rebuild_usage(" WITHOUT ROWID")
    for name, (table, column) in COVERING.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column, "id"])


def downgrade() -> None:
    for name, (table, column) in COVERING.items():
        op.drop_index(name, table_name=table)
        op.create_index(name, table, [column])
    _rebuild_usage("")


def _rebuild_usage(sqlite_suffix: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return      # a PostgreSQL table is a heap either way
    rows = bind.exec_driver_sql("SELECT count(*) FROM (SELECT 1 FROM usage LIMIT 1000000)").scalar() or 0
    if rows >= 1_000_000:   # minutes at millions of rows: say so before the command goes quiet
        logging.getLogger("playbook.store").warning(
            "upgrading the database (migration 0008): rebuilding the usage table, once; 2 to 8 seconds per "
            "million usage rows")
    op.execute(USAGE.format(suffix=sqlite_suffix))
    # in key order: the new B-tree is written page after page
    op.execute("INSERT INTO usage_new SELECT account_id, metric, day, value, synced_at FROM usage "
               "ORDER BY account_id, metric, day")
    op.execute("DROP TABLE usage")
    op.execute("ALTER TABLE usage_new RENAME TO usage")
    op.create_index("ix_usage_metric_account_day", "usage", ["metric", "account_id", "day", "value"])
    op.create_index("ix_usage_synced_at", "usage", ["synced_at"])
