"""field history (§18): the superseded versions of accounts, contacts, goals and usage rows

Each `<entity>_history` table holds the entity's fields (custom fields are added when the database is
opened, as for the entity itself), `removed_at` (not for usage), and the interval the version was valid:
`valid_from` (the `synced_at` it had) to `valid_to` (the sync that replaced or removed it).

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

CORE = {
    "accounts": [("id", sa.String), ("name", sa.String), ("domain", sa.String), ("tier", sa.String),
                 ("lifecycle_stage", sa.String), ("arr", sa.Float), ("seats", sa.BigInteger), ("plan", sa.String),
                 ("csm_email", sa.String), ("renewal_date", sa.Date), ("created_at", sa.DateTime),
                 ("timezone", sa.String)],
    "contacts": [("id", sa.String), ("account_id", sa.String), ("email", sa.String), ("name", sa.String),
                 ("role", sa.String), ("created_at", sa.DateTime), ("timezone", sa.String),
                 ("unsubscribed", sa.Boolean)],
    "goals": [("id", sa.String), ("account_id", sa.String), ("name", sa.String), ("metric", sa.String),
              ("direction", sa.String), ("baseline", sa.Float), ("target", sa.Float), ("current", sa.Float),
              ("due_date", sa.Date), ("status", sa.String)],
    "usage": [("account_id", sa.String), ("metric", sa.String), ("day", sa.Date), ("value", sa.Float)],
}
KEYS = {"accounts": ("id",), "contacts": ("id",), "goals": ("id",), "usage": ("account_id", "metric", "day")}


def upgrade() -> None:
    for entity, fields in CORE.items():
        keys = KEYS[entity]
        cols = [sa.Column(name, kind(), primary_key=name in keys, nullable=name not in keys) for name, kind in fields]
        if entity != "usage":
            cols.append(sa.Column("removed_at", sa.DateTime(), nullable=True))
        cols.append(sa.Column("valid_from", sa.DateTime(), primary_key=True))
        cols.append(sa.Column("valid_to", sa.DateTime(), nullable=False))
        op.create_table(f"{entity}_history", *cols, sqlite_with_rowid=False)


def downgrade() -> None:
    for entity in CORE:
        op.drop_table(f"{entity}_history")
