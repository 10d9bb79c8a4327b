"""INSERT ... ON CONFLICT DO NOTHING on both backends.

Get-or-create under concurrency: two writers creating the same row both succeed, one of them
without effect, and both read back the one row.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

_PREPARED: dict[tuple[str, str, tuple[str, ...], tuple[str, ...]], Any] = {}


def insert_ignoring_conflict(
    session: Session, model: type[Any], values: dict[str, Any], conflict_on: list[str]
) -> Any:
    """An insert that does nothing when ``conflict_on`` already exists; ``.returning()`` works."""
    insert = sqlite.insert if session.get_bind().dialect.name == "sqlite" else postgresql.insert
    return insert(model).values(**values).on_conflict_do_nothing(index_elements=conflict_on)


def prepared_insert_ignoring_conflict(
    session: Session, table: Table, conflict_on: tuple[str, ...], also: tuple[str, ...] = ()
) -> Any:
    """The same insert without values, built once per backend: execute it with the rows.

    It returns each new row's primary key (and the columns named in ``also``), and no row for
    one that was there already. For rows inserted often, building the statement again each time
    cost more than running it.
    """
    dialect = session.get_bind().dialect.name
    key = (dialect, table.name, conflict_on, also)
    statement = _PREPARED.get(key)
    if statement is None:
        insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
        statement = (
            insert(table)
            .on_conflict_do_nothing(index_elements=list(conflict_on))
            .returning(*table.primary_key.columns, *(table.c[name] for name in also))
        )
        _PREPARED[key] = statement
    return statement
