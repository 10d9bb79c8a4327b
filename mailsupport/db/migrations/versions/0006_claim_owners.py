"""who holds outbound mail being sent

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 10:20:00.000000

Claims name the daemon holding them, so that the same daemon started again takes back at once
what it held instead of waiting out its own lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Columns = tuple[tuple[str, sa.types.TypeEngine[Any]], ...]
_OUTBOX: _Columns = (
    ("claimed_by", sa.String(length=255)),
    ("claimed_started", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35 and later), as in 0005: no copy of the table.
    for name, type_ in _OUTBOX:
        op.add_column("outbox", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _type in _OUTBOX:
        op.drop_column("outbox", name)
