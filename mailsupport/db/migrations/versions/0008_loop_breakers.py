"""what the loop breakers look up: a sender's recent mail and its fingerprints, mail per ticket

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24 10:20:00.000000

Each mail that comes in is compared with what its sender sent within the loop window, and
each relayed reply or operator notification with what its ticket already had: both lookups
go by index, so intake does not slow down as the tables grow.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ALTER TABLE on SQLite too: a batch copy of ``messages`` would cascade the
    # deletion of its rows to their attachments.
    op.add_column("messages", sa.Column("body_hash", sa.String(length=32), nullable=True))
    op.create_index(
        "ix_messages_sender_created", "messages", ["from_email", "created_at", "body_hash"]
    )
    op.create_index("ix_outbox_ticket_created", "outbox", ["ticket_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_ticket_created", table_name="outbox")
    op.drop_index("ix_messages_sender_created", table_name="messages")
    op.drop_column("messages", "body_hash")
