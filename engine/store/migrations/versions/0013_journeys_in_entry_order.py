"""journeys as a rowid table in the order subjects entered (a run rewrites the pages of the subjects due
together, not one page per subject); the due index without the subject id

Revision ID: 0013
Revises: 0012
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

COLUMNS = "playbook_id, subject_type, subject_id, episode, status, step, due_at, since, started_at, reason"


def _columns() -> list[sa.Column]:
    return [sa.Column("episode", sa.Integer(), nullable=False),
            sa.Column("status", sa.String(), nullable=False),
            sa.Column("step", sa.String(), nullable=True),
            sa.Column("due_at", sa.DateTime(), nullable=True),
            sa.Column("since", sa.DateTime(), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("reason", sa.Text(), nullable=True)]


def upgrade() -> None:
    op.create_table(
        "journeys_new",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("playbook_id", sa.String(), nullable=False),
        sa.Column("subject_type", sa.String(), nullable=False),
        sa.Column("subject_id", sa.String(), nullable=False),
        *_columns(),
        sa.UniqueConstraint("playbook_id", "subject_type", "subject_id", name="uq_journeys_subject"),
    )
    op.execute(f"INSERT INTO journeys_new ({COLUMNS}) SELECT {COLUMNS} FROM journeys ORDER BY started_at, subject_id")
    op.drop_index("ix_journeys_due", "journeys")
    op.drop_table("journeys")
    op.rename_table("journeys_new", "journeys")
    waiting = sa.column("due_at", sa.DateTime).is_not(None)
    op.create_index("ix_journeys_due", "journeys", ["playbook_id", "subject_type", "due_at"],
                    sqlite_where=waiting, postgresql_where=waiting)


def downgrade() -> None:
    op.create_table(
        "journeys_old",
        sa.Column("playbook_id", sa.String(), primary_key=True),
        sa.Column("subject_type", sa.String(), primary_key=True),
        sa.Column("subject_id", sa.String(), primary_key=True),
        *_columns(),
        sqlite_with_rowid=False,
    )
    op.execute(f"INSERT INTO journeys_old ({COLUMNS}) SELECT {COLUMNS} FROM journeys")
    op.drop_index("ix_journeys_due", "journeys")
    op.drop_table("journeys")
    op.rename_table("journeys_old", "journeys")
    waiting = sa.column("due_at", sa.DateTime).is_not(None)
    op.create_index("ix_journeys_due", "journeys", ["playbook_id", "subject_type", "due_at", "subject_id"],
                    sqlite_where=waiting, postgresql_where=waiting)
