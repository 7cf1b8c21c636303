"""activation (baselined episodes, active playbooks), the contact policy (the outbox's policy, recipient, zone and note;
the customer-facing messages sent per contact and account), tasks a person marked done or snoozed

Playbooks already evaluated stay active: their next evaluation is not an activation.

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("episodes", sa.Column("baselined", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("playbook_state", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("playbook_state", sa.Column("activated_at", sa.DateTime(), nullable=True))
    op.add_column("outbox", sa.Column("policy", sa.String(), nullable=True))
    op.add_column("outbox", sa.Column("account_id", sa.String(), nullable=True))
    op.add_column("outbox", sa.Column("contact_id", sa.String(), nullable=True))
    op.add_column("outbox", sa.Column("zone", sa.String(), nullable=True))
    op.add_column("outbox", sa.Column("note", sa.Text(), nullable=True))
    customer = sa.text("policy = 'customer'")
    op.create_index("ix_outbox_customer_contact", "outbox", ["contact_id"], sqlite_where=customer,
                    postgresql_where=customer)
    op.create_index("ix_outbox_customer_account", "outbox", ["account_id"], sqlite_where=customer,
                    postgresql_where=customer)
    op.add_column("tasks", sa.Column("note", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("snoozed_until", sa.DateTime(), nullable=True))
    op.create_table(
        "contact_sends",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.String(), nullable=True),
        sa.Column("account_id", sa.String(), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
    )
    op.create_index("ix_contact_sends_contact", "contact_sends", ["contact_id", "at"])
    op.create_index("ix_contact_sends_account", "contact_sends", ["account_id", "at"])
    op.create_index("ix_contact_sends_outbox", "contact_sends", ["outbox_id"])


def downgrade() -> None:
    op.drop_table("contact_sends")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("snoozed_until")
        batch.drop_column("note")
    op.drop_index("ix_outbox_customer_account", "outbox")
    op.drop_index("ix_outbox_customer_contact", "outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("note")
        batch.drop_column("zone")
        batch.drop_column("contact_id")
        batch.drop_column("account_id")
        batch.drop_column("policy")
    with op.batch_alter_table("playbook_state") as batch:
        batch.drop_column("activated_at")
        batch.drop_column("active")
    with op.batch_alter_table("episodes") as batch:
        batch.drop_column("baselined")
