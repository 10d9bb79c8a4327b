"""Helpers shared by the tests: building mail, waiting for the daemon, reading tickets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from click.testing import CliRunner

from mailsupport.cli.main import cli


def make_mail(
    *,
    sender: str = "Carol Customer <carol@customer.test>",
    to: str = "support@example.com",
    subject: str = "Printer on floor 3 is jammed",
    body: str = "Hello,\nthe printer is jammed again.\n",
    cc: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
    date: datetime | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="customer.test")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def run_cli(config_path: str, *args: str, input: bytes | None = None) -> Any:
    """Run the CLI in-process; returns click's Result."""
    return CliRunner().invoke(cli, ["-c", config_path, *args], input=input)


def show_ticket(config_path: str, number: int) -> dict[str, Any]:
    result = run_cli(config_path, "tickets", "show", str(number), "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def ingest(
    app: Any,
    raw: bytes,
    *,
    channel: str = "smtp",
    envelope_to: tuple[str, ...] = (),
    authres_trusted: bool = False,
) -> Any:
    """Store a message as a channel would, then run the pipeline on it; returns the Outcome.

    ``authres_trusted``: as from a trusted relay, whose Authentication-Results count.
    """
    from mailsupport.db.inbox import RawMail, store_one
    from mailsupport.pipeline.runner import Pipeline

    mail = RawMail(raw, channel, None, envelope_to, authres_trusted=authres_trusted)
    with app.factory.begin() as session:
        stored = store_one(session, mail, app.clock.now())
    return Pipeline(app.factory, app.config, app.clock).process_one(stored.inbound_id)


def ticket_json(app: Any, number: int) -> dict[str, Any]:
    from mailsupport.cli.views import ticket_detail
    from mailsupport.domain.tickets import get_ticket

    with app.factory() as session:
        return ticket_detail(session, get_ticket(session, number))


def inbound(ticket: dict[str, Any]) -> list[dict[str, Any]]:
    """The customer-side messages of a ticket (`tickets show --json`), ours left out."""
    return [m for m in ticket["messages"] if m["direction"] == "in"]


def set_schema_revision(sqlite_url: str, *revisions: str) -> None:
    """Leave the database as another version of mailsupport would (one row per Alembic head)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as db, db:
        db.execute("DELETE FROM alembic_version")
        db.executemany("INSERT INTO alembic_version VALUES (?)", [(r,) for r in revisions])
