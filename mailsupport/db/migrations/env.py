"""Alembic environment: runs against the connection mailsupport hands it."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from mailsupport.db.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Run migrations with `mailsupport db upgrade`.")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
