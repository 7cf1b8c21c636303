"""journeys (§14): where each subject is in a journey, and when its wait is over

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("playbook_id", sa.String(), primary_key=True),
        sa.Column("subject_type", sa.String(), primary_key=True),
        sa.Column("subject_id", sa.String(), primary_key=True),
        sa.Column("episode", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("step", sa.String(), nullable=True),
        sa.Column("due_at", sa.DateTime(), nullable=True),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sqlite_with_rowid=False,
    )
    waiting = sa.column("due_at", sa.DateTime).is_not(None)
    op.create_index("ix_journeys_due", "journeys", ["playbook_id", "subject_type", "due_at", "subject_id"],
                    sqlite_where=waiting, postgresql_where=waiting)


def downgrade() -> None:
    op.drop_index("ix_journeys_due", "journeys")
    op.drop_table("journeys")
