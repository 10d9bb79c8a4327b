"""Migrations: a database made by an earlier version keeps its mail, and ends up as the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, text

from mailsupport.app import open_app
from mailsupport.config import build_config
from mailsupport.db.migrate import upgrade
from mailsupport.db.models import Base, Inbound
from mailsupport.pipeline.runner import Pipeline

from _fixtures import config_data
from support import make_mail

_STORE_0004 = text(
    "INSERT INTO inbound (dedupe_key, message_id, channel, envelope_to, received_at, size, raw,"
    " state, screen_reasons, no_auto_reply, attempts)"
    " VALUES ('k1', 'old@customer.test', 'smtp', '[]', '2026-03-02 09:00:00', :size, :raw,"
    " 'pending', '[]', :no, 0)"
)


def test_mail_stored_before_the_bytes_moved_is_kept_and_processed(db_url: str) -> None:
    raw = make_mail(message_id="<old@customer.test>")
    engine = create_engine(db_url)
    try:
        _empty(engine)
        upgrade(engine, "0004")
        with engine.begin() as connection:
            connection.execute(_STORE_0004, {"raw": raw, "size": len(raw), "no": False})
        upgrade(engine)
    finally:
        engine.dispose()

    app = open_app(build_config(config_data(db_url), env={}))
    try:
        with app.factory() as session:
            assert session.get_one(Inbound, 1).raw == raw
        assert Pipeline(app.factory, app.config, app.clock).process_pending() == 1
    finally:
        app.close()


def _empty(engine: Engine) -> None:
    """Start from no schema at all (the PostgreSQL fixture hands over a migrated one)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))


def test_the_migrated_schema_is_the_models(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_the_schema_head_known_without_alembic_is_the_scripts_head() -> None:
    from mailsupport.db.migrate import head_revision
    from mailsupport.db.schema import HEAD

    assert head_revision() == HEAD
