"""fewer pages written per tick: episodes without rowid on SQLite (one B-tree keyed by playbook and subject,
not a row table plus a key index), and no (playbook_id, is_open) index (the key's playbook prefix serves
the per-playbook reads; on PostgreSQL, episode updates then change no indexed column)

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

EPISODES = ("CREATE TABLE episodes_new (playbook_id VARCHAR NOT NULL, subject_type VARCHAR NOT NULL, "
            "subject_id VARCHAR NOT NULL, is_open BOOLEAN NOT NULL, episode INTEGER NOT NULL, firing INTEGER NOT NULL, "
            "started_at DATETIME, last_fired_at DATETIME, resolved_at DATETIME, "
            "PRIMARY KEY (playbook_id, subject_type, subject_id)){suffix}")


def upgrade() -> None:
    op.drop_index("ix_episodes_open", table_name="episodes")
    _rebuild_episodes(" WITHOUT ROWID")


def downgrade() -> None:
    _rebuild_episodes("")
    op.create_index("ix_episodes_open", "episodes", ["playbook_id", "is_open"])


def _rebuild_episodes(sqlite_suffix: str) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return      # a PostgreSQL table is a heap either way
    op.execute(EPISODES.format(suffix=sqlite_suffix))
    op.execute("INSERT INTO episodes_new SELECT playbook_id, subject_type, subject_id, is_open, episode, firing, "
               "started_at, last_fired_at, resolved_at FROM episodes")
    op.execute("DROP TABLE episodes")
    op.execute("ALTER TABLE episodes_new RENAME TO episodes")
