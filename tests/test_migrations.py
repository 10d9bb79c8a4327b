"""Migrations: a database made by an earlier version keeps its mail, and ends up as the models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, select, text

from mailsupport.app import open_app
from mailsupport.config import build_config
from mailsupport.db.migrate import MIGRATIONS, upgrade
from mailsupport.db.models import Base, Inbound, Outbox
from mailsupport.pipeline.runner import Pipeline

from _fixtures import config_data
from support import ingest, make_mail

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


def _downgrade(engine: Engine, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_mail_processed_before_outcomes_were_kept_gets_them(db_url: str) -> None:
    """Processed by a version that kept no disposition: it is worked out from what it became."""
    app = open_app(build_config(config_data(db_url), env={}), migrate=True)
    try:
        opened = ingest(app, make_mail(message_id="<first@customer.test>"))
        joined = ingest(app, make_mail(subject="Re: x", in_reply_to="<first@customer.test>"))
        away = ingest(
            app, make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"})
        )
        with app.factory() as session:
            ack = session.execute(select(Outbox.message_id)).scalars().first()
        bounce = ingest(app, _bounce_of(str(ack)))
    finally:
        app.close()
    engine = create_engine(db_url)
    try:
        _downgrade(engine, "0005")
        upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    Inbound.id, Inbound.disposition, Inbound.ticket_number, Inbound.from_address
                ).order_by(Inbound.id)
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        (opened.inbound_id, "ticket", 1, "carol@customer.test"),
        (joined.inbound_id, "follow-up", 1, "carol@customer.test"),
        (away.inbound_id, "dropped", None, None),
        (bounce.inbound_id, "bounce", None, None),
    ]


def _bounce_of(message_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.test\r\nTo: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn@mx.customer.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
        'boundary="b"\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n'
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        "Final-Recipient: rfc822; carol@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        f"\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\n"
        "\r\n--b--\r\n"
    ).encode()


def test_the_schema_head_known_without_alembic_is_the_scripts_head() -> None:
    from mailsupport.db.migrate import head_revision
    from mailsupport.db.schema import HEAD

    assert head_revision() == HEAD


def _settings(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT key, value FROM settings")).all()
    return {str(key): str(value) for key, value in rows}


def test_reply_addresses_sent_before_they_carried_a_day_keep_working_for_a_while(
    db_url: str,
) -> None:
    """The old key becomes the reply key, and its undated addresses date from the upgrade."""
    from datetime import UTC, datetime

    from mailsupport.core.replyaddr import day_number

    app = open_app(build_config(config_data(db_url), env={}), migrate=True)
    try:
        ingest(app, make_mail())  # a ticket, whose operators may hold undated addresses
    finally:
        app.close()
    engine = create_engine(db_url)
    try:
        _downgrade(engine, "0008")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM settings"))
            connection.execute(text("INSERT INTO settings VALUES ('signing-key', 'old')"))
        before = day_number(datetime.now(UTC))
        upgrade(engine)
        after = day_number(datetime.now(UTC))
        settings = _settings(engine)
        _downgrade(engine, "0008")
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM tickets"))
        upgrade(engine)
        fresh = _settings(engine)
    finally:
        engine.dispose()
    assert settings.pop("undated-reply-addresses-issued") in {str(before), str(after)}
    assert settings == {"signing-key": "old", "reply-key": "old"}
    assert fresh == {"signing-key": "old", "reply-key": "old"}  # no ticket: none was sent
