"""fewer pages written per tick, and plans that do not depend on statistics: match_state keyed by
(subject_type, word, subject_id), without rowid on SQLite; no outbox episode index (task actions are
cancelled through their dedup keys)

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

MATCH_STATE = ("CREATE TABLE {name} (subject_type VARCHAR NOT NULL, subject_id VARCHAR NOT NULL, word INTEGER NOT NULL, "
               "mask BIGINT NOT NULL, CONSTRAINT {pk} PRIMARY KEY ({key})){suffix}")


def upgrade() -> None:
    op.drop_index("ix_outbox_episode", table_name="outbox")
    _rebuild_match_state("pk_match_state", "subject_type, word, subject_id", " WITHOUT ROWID")


def downgrade() -> None:
    _rebuild_match_state("match_state_pkey", "subject_type, subject_id, word", "")
    op.create_index("ix_outbox_episode", "outbox", ["playbook_id", "subject_type", "subject_id", "episode"])


def _rebuild_match_state(pk: str, key: str, sqlite_suffix: str) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.execute(MATCH_STATE.format(name="match_state_new", pk=pk, key=key, suffix=sqlite_suffix if sqlite else ""))
    op.execute("INSERT INTO match_state_new (subject_type, subject_id, word, mask) "
               "SELECT subject_type, subject_id, word, mask FROM match_state")
    op.execute("DROP TABLE match_state")
    op.execute("ALTER TABLE match_state_new RENAME TO match_state")
