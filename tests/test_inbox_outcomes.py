"""What became of each stored message, tickets or not, and `mailsupport inbox list`.

Mail kept out of the tickets (an auto-reply or a bounce matching nothing) must still be found;
automatic mail that answers nothing (a ticket system's notice) opens a ticket, unanswered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import build_config
from mailsupport.db.inbox import RawMail, store_one
from mailsupport.db.models import Disposition, InboundState, Outbox
from mailsupport.domain.operators import add_operator, join_queue
from mailsupport.domain.tickets import get_or_create_queue

from _fixtures import config_data, write_config
from support import ingest, make_mail, run_cli

INCIDENT = {"Auto-Submitted": "auto-generated", "X-ServiceNow-Generated": "true"}
SERVICENOW = "ServiceNow <instance@service-now.example>"
OUT_OF_OFFICE = {"Auto-Submitted": "auto-replied"}


def _dsn(returned_message_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.customer.test\r\nTo: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <dsn-{returned_message_id}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        "Final-Recipient: rfc822; carol@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{returned_message_id}>\r\n"
        "\r\n--b--\r\n"
    ).encode()


def _listed(config_file: str, *args: str) -> list[dict[str, Any]]:
    result = run_cli(config_file, "inbox", "list", "--json", *args)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def _queued(app: App) -> list[tuple[str, bool]]:
    with app.factory() as session:
        return [(r.kind, r.automatic) for r in session.execute(select(Outbox)).scalars()]


def test_an_incident_notice_opens_a_ticket_without_an_answer(app: App) -> None:
    with app.factory.begin() as session:
        support = get_or_create_queue(session, "support")
        join_queue(
            session, add_operator(session, "alice@example.com", "Alice", app.clock.now()), support
        )
    notice = make_mail(
        sender=SERVICENOW,
        subject="Incident INC0012345 has been assigned to your group",
        headers=INCIDENT,
    )
    outcome = ingest(app, notice)
    assert outcome.ticket_number == 1
    assert outcome.disposition is Disposition.TICKET
    # Its operators hear of it; the sending system gets nothing back.
    assert _queued(app) == [("operator_new_ticket", False)]


def test_every_outcome_is_listed_with_its_reason(app: App, config_file: str) -> None:
    opened = ingest(app, make_mail(message_id="<first@customer.test>"))
    joined = ingest(
        app,
        make_mail(subject="Re: Printer", in_reply_to="<first@customer.test>"),
    )
    away = ingest(app, make_mail(subject="Out of office", headers=OUT_OF_OFFICE))
    nothing_of_ours = ingest(app, _dsn("unknown@elsewhere.test"))
    with app.factory() as session:
        ack = session.execute(select(Outbox.message_id)).scalars().first()
    assert ack is not None
    bounce = ingest(app, _dsn(ack))
    quarantined = ingest(app, make_mail(sender=f"Junk <zed@{'d' * 260}.test>"))
    with app.factory.begin() as session:
        pending = store_one(session, RawMail(make_mail(), "smtp"), app.clock.now()).inbound_id
    assert [o.disposition for o in (opened, joined, away, nothing_of_ours, bounce)] == [
        Disposition.TICKET,
        Disposition.FOLLOW_UP,
        Disposition.DROPPED,
        Disposition.DROPPED,
        Disposition.BOUNCE,
    ]
    assert quarantined.state is InboundState.QUARANTINED

    rows = {row["id"]: row for row in _listed(config_file)}
    assert list(rows) == sorted(rows, reverse=True)  # newest first
    assert {
        key: (rows[o.inbound_id]["outcome"], rows[o.inbound_id]["ticket"])
        for key, o in (("opened", opened), ("joined", joined), ("away", away))
    } == {"opened": ("ticket", 1), "joined": ("follow-up", 1), "away": ("dropped", None)}
    assert rows[away.inbound_id]["reason"] == (
        "automatic reply matching no ticket (Auto-Submitted: auto-replied; "
        "subject of an automatic reply: 'Out of office')"
    )
    assert rows[away.inbound_id]["from"] == "carol@customer.test"
    assert rows[nothing_of_ours.inbound_id]["reason"] == "bounce about no mail of ours"
    assert (rows[bounce.inbound_id]["outcome"], rows[bounce.inbound_id]["ticket"]) == (
        "bounce",
        1,
    )  # the ticket of the mail that bounced
    assert rows[quarantined.inbound_id]["outcome"] == "quarantined"
    assert rows[quarantined.inbound_id]["reason"].startswith("unusable: the sender's address")
    assert rows[pending]["outcome"] == "pending"
    assert set(rows[opened.inbound_id]) == {
        "id",
        "received_at",
        "message_id",
        "from",
        "outcome",
        "reason",
        "ticket",
    }
    assert rows[opened.inbound_id]["message_id"] == "first@customer.test"

    dropped = _listed(config_file, "--outcome", "dropped")
    assert [r["id"] for r in dropped] == [nothing_of_ours.inbound_id, away.inbound_id]
    assert [r["id"] for r in _listed(config_file, "--outcome", "quarantined")] == [
        quarantined.inbound_id
    ]
    assert [r["id"] for r in _listed(config_file, "--outcome", "pending")] == [pending]
    assert len(_listed(config_file, "--limit", "2")) == 2


def test_the_plain_listing_has_one_line_per_message(app: App, config_file: str) -> None:
    away = ingest(app, make_mail(subject="Out of office", headers=OUT_OF_OFFICE))
    result = run_cli(config_file, "inbox", "list", "--outcome", "dropped")
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{away.inbound_id} ")
    assert " dropped " in line and "carol@customer.test" in line
    assert line.endswith(
        "automatic reply matching no ticket (Auto-Submitted: auto-replied; "
        "subject of an automatic reply: 'Out of office')"
    )
    wrong = run_cli(config_file, "inbox", "list", "--outcome", "lost")
    assert wrong.exit_code == 2 and "Invalid value for '--outcome'" in wrong.output


@pytest.fixture
def dropping(db_url: str, clock: FrozenClock, tmp_path: Any) -> Iterator[tuple[App, str]]:
    data = config_data(db_url, pipeline={"automatic_mail": "drop"})
    app = open_app(build_config(data, env={}), clock=clock, migrate=True)
    try:
        yield app, str(write_config(tmp_path / "drop.toml", data))
    finally:
        app.close()


def test_automatic_mail_can_be_dropped_and_is_still_listed(dropping: tuple[App, str]) -> None:
    app, config_file = dropping
    outcome = ingest(app, make_mail(sender=SERVICENOW, headers=INCIDENT))
    assert (outcome.ticket_number, outcome.disposition) == (None, Disposition.DROPPED)
    [row] = _listed(config_file, "--outcome", "dropped")
    assert (row["id"], row["reason"]) == (
        outcome.inbound_id,
        "automatic mail matching no ticket (Auto-Submitted: auto-generated)",
    )
    assert row["from"] == "instance@service-now.example"
