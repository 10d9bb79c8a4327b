"""whether stored mail came through our MTA, whose Authentication-Results may then prove a sender

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 20:00:00.000000

An Authentication-Results header proves something only when our MTA wrote it; mail that reached
the listener directly carries whatever its sender wrote. The channel that stores a message now
records whether it came through a trusted relay. Mail stored before counts as not trusted: on
mail still waiting to be processed, a header no channel vouched for proves nothing.
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
    # Plain ALTER TABLE (SQLite 3.35 and later), as in 0005: no copy of the table.
    op.add_column(
        "inbound",
        sa.Column("authres_trusted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("inbound", "authres_trusted")
