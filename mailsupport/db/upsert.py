"""INSERT ... ON CONFLICT DO NOTHING on both backends.

Get-or-create under concurrency: two writers creating the same row both succeed, one of them
without effect, and both read back the one row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflict(
    session: Session, model: type[Any], values: dict[str, Any], conflict_on: list[str]
) -> Any:
    """An insert that does nothing when ``conflict_on`` already exists; ``.returning()`` works."""
    insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    return insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict_on)
