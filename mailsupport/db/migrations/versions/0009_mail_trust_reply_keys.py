"""whether stored mail came through our MTA; a reply-address key of its own, and dated addresses

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:00:00.000000

An Authentication-Results header proves something only when our MTA wrote it; mail that reached
the listener directly carries whatever its sender wrote. The channel that stores a message now
records whether it came through a trusted relay. Mail stored before counts as not trusted: on
mail still waiting to be processed, a header no channel vouched for proves nothing.

Reply addresses now carry the day they were issued and expire, and have a key of their own so
that it can be replaced without touching bounce addresses. The key generated before signed
both: it becomes the reply key too, so that the reply addresses already sent keep working, and
those (which carry no day) count as issued today, the day of the upgrade. A database with no
ticket yet has sent none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SETTINGS = sa.table("settings", sa.column("key", sa.String()), sa.column("value", sa.Text()))
_NEW_KEYS = ("reply-key", "reply-key-previous", "undated-reply-addresses-issued")
_COPY_KEY = (
    "INSERT INTO settings (key, value)"
    " SELECT 'reply-key', value FROM settings WHERE key = 'signing-key'"
)


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35 and later), as in 0005: no copy of the table.
    op.add_column(
        "inbound",
        sa.Column("authres_trusted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(_COPY_KEY)
    connection = op.get_bind()
    if connection.execute(sa.text("SELECT 1 FROM tickets LIMIT 1")).first() is not None:
        today = (datetime.now(UTC).date() - date(1970, 1, 1)).days
        op.execute(_SETTINGS.insert().values(key=_NEW_KEYS[2], value=str(today)))


def downgrade() -> None:
    op.execute(_SETTINGS.delete().where(_SETTINGS.c.key.in_(_NEW_KEYS)))
    op.drop_column("inbound", "authres_trusted")
