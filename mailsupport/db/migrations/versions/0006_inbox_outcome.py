"""what processing made of each stored message, so that all of it can be listed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 18:40:00.000000

Mail kept out of the tickets (an auto-reply or a bounce matching nothing) left no trace but a
line of text. Processed mail already stored gets its disposition, ticket and From from the
ticket message it became; the rest is a bounce or was dropped, as its outcome text says.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# UPDATE ... FROM: SQLite 3.33 and later, PostgreSQL.
_FROM_MESSAGES = """
UPDATE inbound SET
    disposition = CASE WHEN became.opened THEN 'ticket' ELSE 'follow-up' END,
    ticket_number = became.number,
    from_address = became.from_email
FROM (
    SELECT m.inbound_id, t.number, m.from_email,
           m.id = (SELECT MIN(first.id) FROM messages first WHERE first.ticket_id = m.ticket_id)
               AS opened
    FROM messages m JOIN tickets t ON t.id = m.ticket_id
    WHERE m.inbound_id IS NOT NULL
) AS became
WHERE inbound.id = became.inbound_id AND inbound.state = 'processed'
"""
_THE_REST = """
UPDATE inbound SET disposition =
    CASE WHEN outcome LIKE 'bounce of outbox %' THEN 'bounce' ELSE 'dropped' END
WHERE state = 'processed' AND disposition IS NULL
"""


def upgrade() -> None:
    # Plain ALTER TABLE, as in 0005: a batch copy of the table would cascade to inbound_raw.
    op.add_column("inbound", sa.Column("disposition", sa.String(length=16), nullable=True))
    op.add_column("inbound", sa.Column("ticket_number", sa.BigInteger(), nullable=True))
    op.add_column("inbound", sa.Column("from_address", sa.String(length=320), nullable=True))
    op.create_index(
        op.f("ix_inbound_disposition_id"), "inbound", ["disposition", "id"], unique=False
    )
    op.execute(_FROM_MESSAGES)
    op.execute(_THE_REST)


def downgrade() -> None:
    op.drop_index(op.f("ix_inbound_disposition_id"), table_name="inbound")
    op.drop_column("inbound", "from_address")
    op.drop_column("inbound", "ticket_number")
    op.drop_column("inbound", "disposition")
