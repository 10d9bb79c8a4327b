"""Outbound mail end to end: outbox, acknowledgements, notices, retries, bounces, loops.

The relay is a real aiosmtpd server on loopback that fails on demand; the clock is frozen
and moved by the tests, so retries and rate limits are exercised without waiting.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses, parseaddr
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock, as_utc
from mailsupport.config import Config, build_config
from mailsupport.core.message import Address
from mailsupport.core.outmail import OutgoingMail, new_message_id
from mailsupport.db.models import Event, Outbox, OutboxRecipient
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.operators import add_operator, join_queue
from mailsupport.domain.tickets import change_status, get_or_create_queue, get_ticket, parse_status
from mailsupport.outbound import sender as sender_module
from mailsupport.outbound.notify import Notifier
from mailsupport.outbound.outbox import enqueue
from mailsupport.outbound.sender import OutboxSender

from _fixtures import config_data
from sink import Sink
from support import ingest, make_mail, ticket_json

CUSTOMER_ID = "<first@customer.test>"
ALICE = "alice@example.com"


def outbound_config(db_url: str, relay: Sink, **sections: dict[str, Any]) -> Config:
    data = config_data(
        db_url, relay={"port": relay.port, "timeout": 5.0}, notifications={"combine_seconds": 0}
    )
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build_config(data, env={})


@pytest.fixture
def out_app(db_url: str, relay: Sink, clock: FrozenClock) -> Iterator[App]:
    app = open_app(outbound_config(db_url, relay), clock=clock, migrate=True)
    yield app
    app.close()


def send(app: App) -> int:
    return OutboxSender(app.factory, app.config, app.clock).send_due()


def set_status(app: App, number: int, status: str) -> None:
    with app.factory.begin() as session:
        ticket = get_ticket(session, number)
        change_status(session, ticket, parse_status(status), actor=cli_actor(), now=app.clock.now())
        Notifier(app.config, app.clock).flush(session)


def outbox_rows(app: App) -> list[Outbox]:
    with app.factory() as session:
        return list(session.execute(select(Outbox).order_by(Outbox.id)).scalars())


def events(app: App, kind: str) -> list[Event]:
    with app.factory() as session:
        return list(session.execute(select(Event).where(Event.kind == kind)).scalars())


# --- acknowledgement --------------------------------------------------------------------


def test_acknowledgement_threads_under_the_customers_mail(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID, body="secret internal details 4711"))
    assert send(out_app) == 1
    [mail] = relay.to("carol@customer.test")
    ack = mail.message
    assert parseaddr(ack["From"]) == ("ACME Support", "support@example.com")
    assert ack["Subject"] == "[ACME #1] Printer on floor 3 is jammed"
    assert ack["In-Reply-To"] == CUSTOMER_ID
    assert CUSTOMER_ID in ack["References"]
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["Message-ID"].endswith("@example.com>")
    assert ack["Date"]
    assert parseaddr(ack["Reply-To"])[1] == "support@example.com"
    body = ack.get_body(("plain",)).get_content()
    assert "#1" in body
    assert "4711" not in body  # a forged sender learns nothing of the message
    assert mail.mail_from.startswith("support+bounce-")
    assert mail.mail_from.endswith("@example.com")


def test_acknowledgement_is_on_the_ticket_as_outbound(out_app: App) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID))
    messages = ticket_json(out_app, 1)["messages"]
    assert [m["direction"] for m in messages] == ["in", "out"]
    assert messages[1]["outbox_id"] is not None


def test_reply_to_the_acknowledgement_continues_the_ticket(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID))
    send(out_app)
    ack = relay.to("carol@customer.test")[0].message
    reply = make_mail(subject="Re: whatever the client did", in_reply_to=ack["Message-ID"])
    assert ingest(out_app, reply).ticket_number == 1


def test_acknowledgement_in_the_configured_language(
    db_url: str, relay: Sink, clock: FrozenClock
) -> None:
    app = open_app(
        outbound_config(db_url, relay, support={"language": "ru"}), clock=clock, migrate=True
    )
    try:
        ingest(app, make_mail())
        send(app)
        ack = relay.to("carol@customer.test")[0].message
        body = ack.get_body(("plain",)).get_content()
        assert any("а" <= ch <= "я" for ch in body.lower())
    finally:
        app.close()


def test_header_injection_from_customer_data(out_app: App, relay: Sink) -> None:
    raw = (
        b"From: =?utf-8?q?Eve=0D=0ABcc=3A_victim=40evil=2Etest?= <eve@customer.test>\r\n"
        b"To: support@example.com\r\n"
        b"Subject: =?utf-8?q?hello=0D=0ABcc=3A_victim2=40evil=2Etest?=\r\n"
        b"Message-ID: <inject@customer.test>\r\n\r\nhi\r\n"
    )
    ingest(out_app, raw)
    send(out_app)
    [mail] = relay.received
    assert mail.rcpt_tos == ["eve@customer.test"]
    assert mail.message["Bcc"] is None
    assert b"\nBcc:" not in mail.data and b"\r\nBcc:" not in mail.data


# --- status notices ---------------------------------------------------------------------


def test_status_change_notifies_requester_and_participants(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID, cc="dave@customer.test"))
    send(out_app)
    set_status(out_app, 1, "waiting")
    send(out_app)
    assert len(relay.to("dave@customer.test")) == 1  # a participant gets notices, not the ack
    dave = relay.to("dave@customer.test")[-1].message
    assert dave["Subject"].startswith("[ACME #1] ")
    assert dave["In-Reply-To"]
    assert dave["Auto-Submitted"] == "auto-replied"
    assert len(relay.to("carol@customer.test")) == 2  # acknowledgement + notice


def test_status_changes_in_a_burst_become_one_notice(
    db_url: str, relay: Sink, clock: FrozenClock
) -> None:
    config = outbound_config(db_url, relay, notifications={"combine_seconds": 60})
    app = open_app(config, clock=clock, migrate=True)
    try:
        ingest(app, make_mail())
        send(app)
        set_status(app, 1, "waiting")
        clock.advance(timedelta(seconds=20))
        set_status(app, 1, "resolved")
        assert send(app) == 0  # still inside the window
        clock.advance(timedelta(seconds=61))
        assert send(app) == 1
        notices = relay.to("carol@customer.test")[1:]
        assert len(notices) == 1
        assert ticket_json(app, 1)["status"] == "resolved"
    finally:
        app.close()


def test_customer_reopening_their_ticket_gets_no_notice(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID))
    set_status(out_app, 1, "waiting")
    send(out_app)
    before = len(relay.received)
    ingest(
        out_app, make_mail(subject="Re: [ACME #1] x", body="here you go", in_reply_to=CUSTOMER_ID)
    )
    assert ticket_json(out_app, 1)["status"] == "open"
    send(out_app)
    assert len(relay.received) == before


# --- delivery: retries, partial refusal, relay down, crash --------------------------------


def _enqueue(app: App, to: list[str]) -> int:
    mail = OutgoingMail(
        from_name="ACME Support",
        from_address="support@example.com",
        to=tuple(Address(a) for a in to),
        subject="[ACME #9] test",
        text="hello",
        message_id=new_message_id("example.com"),
        auto_submitted="auto-generated",
        date=app.clock.now(),
    )
    with app.factory.begin() as session:
        row = enqueue(
            session,
            app.config,
            mail,
            ticket=None,
            kind="test",
            automatic=False,
            now=app.clock.now(),
        )
        return row.id


def test_temporary_failure_is_retried_with_the_same_message_id(
    out_app: App, relay: Sink, clock: FrozenClock
) -> None:
    outbox_id = _enqueue(out_app, ["a@customer.test"])
    relay.handler.data_replies.extend(["451 4.3.0 try later", "421 4.3.2 shutting down"])
    send(out_app)
    send(out_app)  # not due yet
    clock.advance(timedelta(seconds=61))
    send(out_app)
    assert relay.received == []
    clock.advance(timedelta(seconds=121))
    send(out_app)
    [mail] = relay.received
    row = next(r for r in outbox_rows(out_app) if r.id == outbox_id)
    assert row.state == "sent" and row.attempts == 3
    assert mail.message["Message-ID"] == f"<{row.message_id}>"


def test_one_recipient_refused_others_delivered(out_app: App, relay: Sink) -> None:
    relay.handler.refuse["gone@customer.test"] = "550 5.1.1 no such user"
    outbox_id = _enqueue(out_app, ["a@customer.test", "gone@customer.test", "b@customer.test"])
    send(out_app)
    [mail] = relay.received
    assert sorted(mail.rcpt_tos) == ["a@customer.test", "b@customer.test"]
    with out_app.factory() as session:
        states = {
            r.address: (r.state, r.code)
            for r in session.execute(
                select(OutboxRecipient).where(OutboxRecipient.outbox_id == outbox_id)
            ).scalars()
        }
    assert states["gone@customer.test"] == ("failed", 550)
    assert states["a@customer.test"] == ("sent", 250)


def test_relay_down_then_up_loses_nothing(out_app: App, relay: Sink, clock: FrozenClock) -> None:
    relay.stop()
    ids = [_enqueue(out_app, [f"c{i}@customer.test"]) for i in range(3)]
    send(out_app)
    assert {r.state for r in outbox_rows(out_app)} == {"pending"}
    clock.advance(timedelta(hours=3))
    send(out_app)
    relay.start()
    clock.advance(timedelta(hours=3))
    send(out_app)
    assert sorted(r.rcpt_tos[0] for r in relay.received) == [
        f"c{i}@customer.test" for i in range(3)
    ]
    assert {r.state for r in outbox_rows(out_app) if r.id in ids} == {"sent"}


def test_connection_is_reused(out_app: App, relay: Sink) -> None:
    for i in range(5):
        _enqueue(out_app, [f"r{i}@customer.test"])
    send(out_app)
    assert len(relay.received) == 5
    assert relay.connections == 1


def test_crash_between_commit_and_send_sends_once_after_restart(
    out_app: App, relay: Sink, clock: FrozenClock
) -> None:
    _enqueue(out_app, ["once@customer.test"])
    # The daemon died after the commit: a fresh sender (a restarted daemon) finds the row.
    restarted = OutboxSender(out_app.factory, out_app.config, clock)
    assert restarted.send_due() == 1
    assert restarted.send_due() == 0
    clock.advance(timedelta(days=1))
    assert OutboxSender(out_app.factory, out_app.config, clock).send_due() == 0
    assert len(relay.to("once@customer.test")) == 1


def test_each_result_is_committed_before_the_next_mail_is_handed_over(
    out_app: App, relay: Sink
) -> None:
    """When the relay takes a mail, every mail it took before is already on record as sent.

    So a crash at any moment resends at most the one mail on the wire, never a batch.
    """
    ids = {_enqueue(out_app, [f"n{i}@customer.test"]) for i in range(6)}
    engine = create_engine(out_app.config.database.url)
    unrecorded: list[str] = []
    take = relay.handler.handle_DATA

    async def handle_data(server: Any, session: Any, envelope: Any) -> str:
        earlier = [r.message["Message-ID"].strip("<>") for r in relay.received]
        with engine.connect() as conn:
            rows = conn.execute(
                select(Outbox.message_id, Outbox.state).where(Outbox.message_id.in_(earlier))
            )
            states = {message_id: state for message_id, state in rows}
        unrecorded.extend(m for m in earlier if states.get(m) != "sent")
        return await take(server, session, envelope)

    relay.handler.handle_DATA = handle_data  # type: ignore[method-assign]
    try:
        assert send(out_app) == 6
    finally:
        engine.dispose()
    assert len(relay.received) == 6
    assert unrecorded == []
    assert {r.id for r in outbox_rows(out_app) if r.state == "sent"} == ids


_KILLABLE_SENDER = """
import json, sys
from mailsupport.app import open_app
from mailsupport.config import build_config
from mailsupport.outbound.sender import OutboxSender
app = open_app(build_config(json.loads(sys.argv[1]), env={}))
OutboxSender(app.factory, app.config, app.clock).send_due()
"""


def test_kill_while_sending_resends_only_the_mail_on_the_wire(db_url: str, relay: Sink) -> None:
    """``kill -9`` of the sender as the relay takes the third of six mails: one resend."""
    data = config_data(db_url, relay={"port": relay.port, "timeout": 5.0})
    start = FrozenClock(datetime.now(UTC) - timedelta(minutes=1))
    app = open_app(build_config(data, env={}), clock=start, migrate=True)
    try:
        for i in range(6):
            _enqueue(app, [f"k{i}@customer.test"])
        child = subprocess.Popen([sys.executable, "-c", _KILLABLE_SENDER, json.dumps(data)])
        take = relay.handler.handle_DATA

        async def handle_data(server: Any, session: Any, envelope: Any) -> str:
            reply = await take(server, session, envelope)
            if len(relay.received) == 3:
                child.kill()  # the relay has the mail; the sender never hears the 250
                child.wait()
            return reply

        relay.handler.handle_DATA = handle_data  # type: ignore[method-assign]
        assert child.wait(timeout=60) == -signal.SIGKILL
        relay.handler.handle_DATA = take  # type: ignore[method-assign]
        # The restarted daemon, once the dead one's lease has run out.
        later = FrozenClock(datetime.now(UTC) + timedelta(hours=2))
        assert OutboxSender(app.factory, app.config, later).send_due() == 4
        received = [r.rcpt_tos[0] for r in relay.received]
        assert sorted(set(received)) == [f"k{i}@customer.test" for i in range(6)]
        assert len(received) == 7 and received.count(received[2]) == 2
        assert {r.state for r in outbox_rows(app)} == {"sent"}
    finally:
        app.close()


def test_mail_accepted_by_every_recipient(out_app: App, relay: Sink) -> None:
    outbox_id = _enqueue(out_app, ["a@customer.test", "b@customer.test"])
    assert send(out_app) == 1
    [row] = outbox_rows(out_app)
    assert (row.id, row.state, row.attempts) == (outbox_id, "sent", 1)
    assert row.sent_at is not None and as_utc(row.sent_at) == out_app.clock.now()
    with out_app.factory() as session:
        recipients = session.execute(select(OutboxRecipient)).scalars().all()
    assert {(r.address, r.state, r.code) for r in recipients} == {
        ("a@customer.test", "sent", 250),
        ("b@customer.test", "sent", 250),
    }


def test_a_row_changed_while_it_was_sent_is_left_as_it_is(out_app: App, relay: Sink) -> None:
    """Cancelled between the claim and the result: the result does not resurrect it."""
    outbox_id = _enqueue(out_app, ["a@customer.test"])
    cancel = relay.handler.handle_DATA

    async def cancelled_meanwhile(server: Any, session: Any, envelope: Any) -> str:
        with out_app.factory.begin() as db:
            row = db.get(Outbox, outbox_id)
            assert row is not None
            row.state = "cancelled"
        return await cancel(server, session, envelope)

    relay.handler.handle_DATA = cancelled_meanwhile  # type: ignore[method-assign]
    assert send(out_app) == 1
    [row] = outbox_rows(out_app)
    assert (row.state, row.attempts) == ("cancelled", 0)
    with out_app.factory() as session:
        assert session.execute(select(OutboxRecipient.state)).scalar_one() == "pending"


def test_rows_not_sent_within_the_lease_go_back_to_the_queue(
    out_app: App, relay: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [_enqueue(out_app, [f"l{i}@customer.test"]) for i in range(3)]
    monkeypatch.setattr(sender_module, "LEASED_MAILS", 0)  # the lease runs out after one mail
    assert send(out_app) == 1
    rows = {r.id: r for r in outbox_rows(out_app)}
    assert rows[ids[0]].state == "sent"
    for outbox_id in ids[1:]:
        assert rows[outbox_id].state == "pending"
        assert as_utc(rows[outbox_id].next_attempt_at) == out_app.clock.now()  # due again
    assert send(out_app) == 1
    assert send(out_app) == 1
    assert len(relay.received) == 3


def test_the_sender_hands_back_its_connection_as_it_found_it(out_app: App, relay: Sink) -> None:
    _enqueue(out_app, ["a@customer.test"])
    send(out_app)
    with out_app.engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        else:
            assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"


def test_giving_up_is_recorded_on_the_ticket(out_app: App, relay: Sink, clock: FrozenClock) -> None:
    ingest(out_app, make_mail())
    relay.handler.data_replies.extend(["451 4.3.0 later"] * 100)
    for _ in range(60):
        send(out_app)
        clock.advance(timedelta(hours=2))
    [ack] = outbox_rows(out_app)
    assert ack.state == "failed"
    [failed] = events(out_app, "delivery_failed")
    assert failed.new == "carol@customer.test"
    assert "gave up" in failed.data["detail"]


# --- bounces ------------------------------------------------------------------------------


def _dsn(to: str, recipient: str, message_id: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.customer.test\r\nTo: {to}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Message-ID: <{new_message_id('mx.customer.test')}>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.test\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\n"
        f"To: {recipient}\r\n\r\n--b--\r\n"
    ).encode()


def test_hard_bounce_is_linked_to_its_delivery(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail())
    send(out_app)
    [mail] = relay.received
    [ack] = outbox_rows(out_app)
    outcome = ingest(
        out_app,
        _dsn(mail.mail_from, "carol@customer.test", ack.message_id),
        envelope_to=(mail.mail_from,),
    )
    assert outcome.ticket_number is None
    assert f"bounce of outbox {ack.id}" in outcome.detail
    with out_app.factory() as session:
        recipient = session.execute(select(OutboxRecipient)).scalar_one()
        assert recipient.state == "bounced"
    assert [e.new for e in events(out_app, "bounce")] == ["carol@customer.test"]
    assert len(ticket_json(out_app, 1)["messages"]) == 2  # no bounce message added, no ticket
    assert send(out_app) == 0  # and no reply to the bounce


def test_forged_bounce_address_is_not_trusted(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail())
    send(out_app)
    [ack] = outbox_rows(out_app)
    forged = f"support+bounce-{ack.id}-aaaaaaaaaa@example.com"
    outcome = ingest(
        out_app,
        _dsn(forged, "carol@customer.test", "unknown@elsewhere.test"),
        envelope_to=(forged,),
    )
    assert outcome.detail == "bounce about no mail of ours"
    with out_app.factory() as session:
        assert session.execute(select(OutboxRecipient)).scalar_one().state == "sent"


def test_repeated_hard_bounces_stop_mail_to_the_address(out_app: App, relay: Sink) -> None:
    for i in range(3):
        ingest(out_app, make_mail(subject=f"problem {i}", body=f"Problem {i} is this."))
        send(out_app)
        mail = relay.received[-1]
        row = outbox_rows(out_app)[-1]
        ingest(
            out_app,
            _dsn(mail.mail_from, "carol@customer.test", row.message_id),
            envelope_to=(mail.mail_from,),
        )
    sent_before = len(relay.received)
    ingest(out_app, make_mail(subject="problem 4", body="Problem 4 is this."))
    set_status(out_app, 1, "waiting")
    send(out_app)
    assert len(relay.received) == sent_before
    assert any(
        "bounced repeatedly" in e.data["reason"] for e in events(out_app, "auto_reply_suppressed")
    )


# --- loop safety ----------------------------------------------------------------------------


LOOP_TRIGGERS: dict[str, dict[str, Any]] = {
    "auto-submitted": {"headers": {"Auto-Submitted": "auto-replied"}},
    "auto-generated": {"headers": {"Auto-Submitted": "auto-generated"}},
    "precedence-bulk": {"headers": {"Precedence": "bulk"}},
    "precedence-junk": {"headers": {"Precedence": "junk"}},
    "precedence-list": {"headers": {"Precedence": "list"}},
    "list-id": {"headers": {"List-Id": "<users.lists.customer.test>"}},
    "list-unsubscribe": {"headers": {"List-Unsubscribe": "<mailto:leave@customer.test>"}},
    "x-auto-response-suppress": {"headers": {"X-Auto-Response-Suppress": "All"}},
    "mailer-daemon": {"sender": "MAILER-DAEMON@customer.test"},
    "postmaster": {"sender": "postmaster@customer.test"},
    "noreply": {"sender": "no-reply@customer.test"},
    "our-own-address": {"sender": "support@example.com"},
    "our-message-id": {"message_id": f"<{new_message_id('example.com')}>"},
}


@pytest.mark.parametrize("trigger", sorted(LOOP_TRIGGERS))
def test_no_automatic_mail_in_answer_to(out_app: App, relay: Sink, trigger: str) -> None:
    ingest(out_app, make_mail(**LOOP_TRIGGERS[trigger]))
    send(out_app)
    assert relay.received == []
    assert [r for r in outbox_rows(out_app) if r.automatic] == []


SPAM = {"X-Spam-Flag": "YES", "X-Spam-Status": "Yes, score=9.1 required=5.0 tests=BAYES_99"}


def test_mail_flagged_as_spam_opens_its_ticket_and_gets_no_answer(
    out_app: App, relay: Sink
) -> None:
    """An acknowledgement to spam is backscatter; the mail may be real, so it is kept."""
    with out_app.factory.begin() as session:
        support = get_or_create_queue(session, "support")
        join_queue(session, add_operator(session, ALICE, "Alice", out_app.clock.now()), support)
    outcome = ingest(out_app, make_mail(headers=SPAM))
    assert outcome.ticket_number == 1
    send(out_app)
    assert relay.to("carol@customer.test") == []
    [held] = events(out_app, "auto_reply_suppressed")
    assert held.data["mail"] == "acknowledgement"
    assert "flagged as spam: X-Spam-Flag: YES" in held.data["reason"]
    [told] = relay.to(ALICE)  # operators hear of it as of any new ticket, with the verdict
    body = told.message.get_body(("plain",)).get_content()
    assert body.startswith(
        "Flagged as spam by the mail filter (X-Spam-Flag: YES, X-Spam-Status: Yes)"
    )


def test_a_reply_flagged_as_spam_joins_its_ticket_and_causes_no_notice(
    out_app: App, relay: Sink
) -> None:
    ingest(out_app, make_mail(message_id=CUSTOMER_ID))
    set_status(out_app, 1, "waiting")
    send(out_app)
    sent_before = len(relay.received)
    [ack] = [r for r in outbox_rows(out_app) if r.kind == "acknowledgement"]
    reply = make_mail(subject="Re: Printer", in_reply_to=f"<{ack.message_id}>", headers=SPAM)
    assert ingest(out_app, reply).ticket_number == 1
    send(out_app)
    assert len(relay.received) == sent_before
    assert len(ticket_json(out_app, 1)["messages"]) == 4  # mail, ack, notice, the reply


def test_null_return_path_gets_no_reply(out_app: App, relay: Sink) -> None:
    from mailsupport.db.inbox import RawMail, store_one
    from mailsupport.pipeline.runner import Pipeline

    with out_app.factory.begin() as session:
        stored = store_one(
            session, RawMail(make_mail(), "smtp", "", ("support@example.com",)), out_app.clock.now()
        )
    Pipeline(out_app.factory, out_app.config, out_app.clock).process_one(stored.inbound_id)
    send(out_app)
    assert relay.received == []


def test_per_address_cap(out_app: App, relay: Sink, clock: FrozenClock) -> None:
    # Each a different text: the same one again would be taken for a responder's.
    for i in range(12):
        ingest(out_app, make_mail(subject=f"new problem {i}", body=f"New problem {i}."))
    send(out_app)
    assert len(relay.to("carol@customer.test")) == 10
    held = events(out_app, "auto_reply_suppressed")
    assert len(held) == 2 and "last hour" in held[0].data["reason"]
    clock.advance(timedelta(hours=1, minutes=1))
    ingest(out_app, make_mail(subject="after an hour", body="After an hour."))
    send(out_app)
    assert len(relay.to("carol@customer.test")) == 11


@pytest.mark.parametrize("announces_itself", [True, False])
def test_vacation_responder_for_a_day(
    out_app: App, relay: Sink, clock: FrozenClock, announces_itself: bool
) -> None:
    """A responder answering everything we send: at most 2 mails are exchanged in 24 hours."""
    ingest(out_app, make_mail(message_id=CUSTOMER_ID))
    answered: set[str] = set()
    exchanged = 0
    for _ in range(24 * 6):
        send(out_app)
        for mail in relay.to("carol@customer.test"):
            ours = mail.message
            if ours["Message-ID"] in answered:
                continue
            answered.add(ours["Message-ID"])
            exchanged += 1
            headers = {"Auto-Submitted": "auto-replied"} if announces_itself else {}
            reply = make_mail(
                subject=f"Out of office: {ours['Subject']}",
                body="I am away.",
                in_reply_to=ours["Message-ID"],
                references=ours["Message-ID"],
                headers=headers,
            )
            ingest(out_app, reply)
            exchanged += 1
        clock.advance(timedelta(minutes=10))
    assert exchanged <= 2


def test_no_corpus_machine_mail_causes_an_automatic_mail(
    corpus_files: list[Any], sqlite_url: str, relay: Sink
) -> None:
    """Bounces, vacation replies and abuse reports from the corpus: never an automatic mail."""
    from mailsupport.db.inbox import RawMail, store_many
    from mailsupport.db.models import Inbound, Message
    from mailsupport.pipeline.runner import Pipeline

    config = outbound_config(
        sqlite_url, relay, limits={"auto_replies_per_hour": 10_000, "auto_replies_per_day": 10_000}
    )
    app = open_app(config, migrate=True)
    try:
        with app.factory.begin() as session:
            store_many(
                session, [RawMail(p.read_bytes(), "import") for p in corpus_files], app.clock.now()
            )
        Pipeline(app.factory, config, app.clock).process_pending()
        with app.factory() as session:
            machine = {
                row.id
                for row in session.execute(select(Inbound)).scalars()
                if row.no_auto_reply or (row.kind or "normal") != "normal"
            }
            caused = [
                message.inbound_id
                for row in session.execute(
                    select(Outbox).where(Outbox.automatic.is_(True))
                ).scalars()
                for message in session.execute(
                    select(Message)
                    .where(Message.ticket_id == row.ticket_id, Message.direction == "in")
                    .order_by(Message.id)
                    .limit(1)
                ).scalars()
            ]
        print(f"\nautomatic mails: {len(caused)}; machine mail in corpus: {len(machine)}")
        assert machine
        assert not machine & set(caused)
    finally:
        app.close()


def test_recipients_of_acknowledgements_are_never_ours(out_app: App) -> None:
    ingest(out_app, make_mail(cc="sales@example.com, support+x@example.com"))
    with out_app.factory() as session:
        addresses = {r.address for r in session.execute(select(OutboxRecipient)).scalars()}
    assert addresses == {"carol@customer.test"}
    data = ticket_json(out_app, 1)
    assert {p["email"] for p in data["participants"]} == {"carol@customer.test"}


def test_outbound_recipient_headers(out_app: App, relay: Sink) -> None:
    ingest(out_app, make_mail(sender='"Ivan Petrov" <ivan@customer.test>'))
    send(out_app)
    [mail] = relay.received
    assert getaddresses([mail.message["To"]]) == [("Ivan Petrov", "ivan@customer.test")]
