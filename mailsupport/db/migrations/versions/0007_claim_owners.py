"""who holds stored and outbound mail, and how often stored mail was taken in hand

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 10:20:00.000000

A stored message that kills the worker processing it (out of memory, a crash in a C extension,
the time limit) was taken up again after every restart, for ever, and nothing behind it was
processed. Counting each time a worker takes it in hand, before the work starts, finds it out.
Claims also name the daemon holding them, so that the same daemon started again takes back at
once what it held instead of waiting out its own lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Columns = tuple[tuple[str, sa.types.TypeEngine[Any]], ...]
_INBOUND: _Columns = (
    ("taken_by", sa.String(length=255)),
    ("taken_started", sa.DateTime(timezone=True)),
    ("taken_slot", sa.Integer()),
    ("taken_until", sa.DateTime(timezone=True)),
)
_OUTBOX: _Columns = (
    ("claimed_by", sa.String(length=255)),
    ("claimed_started", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # Plain ALTER TABLE (SQLite 3.35 and later), as in 0005: no copy of the tables.
    op.add_column("inbound", sa.Column("takes", sa.Integer(), nullable=False, server_default="0"))
    for name, type_ in _INBOUND:
        op.add_column("inbound", sa.Column(name, type_, nullable=True))
    for name, type_ in _OUTBOX:
        op.add_column("outbox", sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    for name, _type in _OUTBOX:
        op.drop_column("outbox", name)
    for name, _type in _INBOUND:
        op.drop_column("inbound", name)
    op.drop_column("inbound", "takes")
