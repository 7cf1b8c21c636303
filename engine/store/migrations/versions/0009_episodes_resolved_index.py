"""closed episodes by resolution time (partial index): a changes-only scan reads the subjects whose cooldown
ended since the last scan as a range, instead of every episode of the playbook

Revision ID: 0009
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    closed = sa.column("is_open", sa.Boolean).is_(False)
    op.create_index("ix_episodes_resolved", "episodes", ["playbook_id", "subject_type", "resolved_at"],
                    sqlite_where=closed, postgresql_where=closed)


def downgrade() -> None:
    op.drop_index("ix_episodes_resolved", table_name="episodes")
