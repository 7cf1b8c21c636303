"""digests: the outbox's digest key (an item's digest) and digest (what a digest lists of an item)

Revision ID: 0012
Revises: 0011
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("digest_key", sa.String(), nullable=True))
    op.add_column("outbox", sa.Column("digest", sa.JSON(), nullable=True))
    in_digest = sa.text("digest_key IS NOT NULL")
    op.create_index("ix_outbox_digest_key", "outbox", ["digest_key"], sqlite_where=in_digest,
                    postgresql_where=in_digest)


def downgrade() -> None:
    op.drop_index("ix_outbox_digest_key", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("digest")
        batch.drop_column("digest_key")
