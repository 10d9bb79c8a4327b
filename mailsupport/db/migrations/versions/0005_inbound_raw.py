"""stored messages' bytes in a table of their own

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 19:05:00.000000

SQLite rewrites a whole record on every update, and the pipeline updates each stored message
once it is processed: with the bytes in that record, every message was written twice.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "inbound_raw",
        sa.Column("inbound_id", _BIG_ID, nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["inbound_id"],
            ["inbound.id"],
            name=op.f("fk_inbound_raw_inbound_id_inbound"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("inbound_id", name=op.f("pk_inbound_raw")),
    )
    op.execute("INSERT INTO inbound_raw (inbound_id, raw) SELECT id, raw FROM inbound")
    # A plain ALTER TABLE (SQLite 3.35 and later), not a batch copy of the table: dropping the
    # old table would cascade to the bytes just copied, as foreign keys are enforced.
    op.drop_column("inbound", "raw")


def downgrade() -> None:
    # Nullable on the way back: SQLite adds a NOT NULL column only with a default.
    op.add_column("inbound", sa.Column("raw", sa.LargeBinary(), nullable=True))
    op.execute(
        "UPDATE inbound SET raw = "
        "(SELECT raw FROM inbound_raw WHERE inbound_raw.inbound_id = inbound.id)"
    )
    op.drop_table("inbound_raw")
