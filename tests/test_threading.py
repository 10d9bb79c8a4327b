"""Threading on a real database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from mailsupport.app import App
from mailsupport.clock import FrozenClock
from mailsupport.db.models import Event, Ticket, TicketStatus
from mailsupport.domain.actors import cli_actor
from mailsupport.domain.tickets import change_status, get_ticket

from support import inbound, ingest, make_mail, ticket_json

ORIGINAL_ID = "<original@customer.test>"


def _open_ticket(app: App, **kw: object) -> int:
    outcome = ingest(app, make_mail(message_id=ORIGINAL_ID, cc="dave@customer.test", **kw))  # type: ignore[arg-type]
    assert outcome.ticket_number is not None, outcome
    return int(outcome.ticket_number)


def _tickets(app: App) -> int:
    with app.factory() as session:
        return int(session.execute(select(func.count(Ticket.id))).scalar_one())


def test_new_ticket_fields(app: App) -> None:
    number = _open_ticket(app, subject="Re: Fwd: Printer jammed", to="support@example.com")
    data = ticket_json(app, number)
    assert number == 1
    assert data["subject"] == "Printer jammed"
    assert data["status"] == "new"
    assert data["requester"] == "carol@customer.test"
    assert {p["email"] for p in data["participants"]} == {
        "carol@customer.test",
        "dave@customer.test",
    }


def test_queue_by_recipient(app: App) -> None:
    outcome = ingest(app, make_mail(to="sales@example.com"), envelope_to=("sales@example.com",))
    assert ticket_json(app, outcome.ticket_number)["queue"] == "sales"
    header_only = ingest(app, make_mail(to="Sales <SALES@example.com>", subject="other"))
    assert ticket_json(app, header_only.ticket_number)["queue"] == "sales"


@pytest.mark.parametrize(
    ("to", "cc", "delivered_to", "queue"),
    [
        # Postfix delivers each recipient's copy on its own; the copy stored first decides
        # nothing: the first of our addresses in To, then Cc, does.
        ("support@example.com", "sales@example.com", ("sales@example.com",), "support"),
        ("support@example.com, sales@example.com", None, ("sales@example.com",), "support"),
        ("Sales <sales@example.com>", "support@example.com", ("support@example.com",), "sales"),
        ("ann@customer.test, sales@example.com", "support@example.com", (), "sales"),
        # None of ours in the headers (Bcc): the first in the configuration.
        ("ann@customer.test", None, ("sales@example.com", "support@example.com"), "support"),
        ("ann@customer.test", None, ("sales@example.com",), "sales"),
    ],
)
def test_the_queue_of_mail_to_two_of_our_addresses_is_the_first_named(
    app: App, to: str, cc: str | None, delivered_to: tuple[str, ...], queue: str
) -> None:
    outcome = ingest(app, make_mail(to=to, cc=cc), envelope_to=delivered_to)
    assert ticket_json(app, outcome.ticket_number)["queue"] == queue


@pytest.mark.parametrize(
    "prefix", ["Re: ", "RE: Re: ", "Fwd: ", "AW: ", "SV: ", "Ответ: ", "回复: ", "Re[2]: ", ""]
)
def test_tag_with_each_prefix_style(app: App, prefix: str) -> None:
    number = _open_ticket(app)
    reply = make_mail(
        subject=f"{prefix}[ACME #{number}] Printer on floor 3 is jammed", body="again"
    )
    outcome = ingest(app, reply)
    assert outcome.ticket_number == number
    messages = inbound(ticket_json(app, number))
    assert len(messages) == 2
    assert messages[1]["thread_reason"].startswith("subject tag")


def test_cc_participant_may_use_the_tag(app: App) -> None:
    number = _open_ticket(app)
    reply = make_mail(sender="dave@customer.test", subject=f"Re: [ACME #{number}] x")
    assert ingest(app, reply).ticket_number == number


def test_references_without_tag(app: App) -> None:
    number = _open_ticket(app)
    reply = make_mail(
        sender="erin@customer.test",  # not a participant: the reference is what counts
        subject="Re: Printer on floor 3 is jammed",
        in_reply_to=ORIGINAL_ID,
        references=f"<unrelated@x.test> {ORIGINAL_ID}",
    )
    outcome = ingest(app, reply)
    assert outcome.ticket_number == number
    data = ticket_json(app, number)
    assert inbound(data)[1]["thread_reason"] == "references <original@customer.test>"
    assert "erin@customer.test" in {p["email"] for p in data["participants"]}


def test_references_only_header(app: App) -> None:
    number = _open_ticket(app)
    reply = make_mail(subject="no tag here", references=ORIGINAL_ID)
    assert ingest(app, reply).ticket_number == number


def test_stranger_quoting_a_tag_opens_a_new_ticket(app: App) -> None:
    number = _open_ticket(app)
    forged = make_mail(sender="mallory@evil.test", subject=f"Re: [ACME #{number}] give me the data")
    outcome = ingest(app, forged)
    assert outcome.ticket_number != number
    data = ticket_json(app, number)
    assert len(inbound(data)) == 1
    assert "mallory@evil.test" not in {p["email"] for p in data["participants"]}
    new = ticket_json(app, outcome.ticket_number)
    assert new["requester"] == "mallory@evil.test"
    assert "not on that ticket" in new["messages"][0]["thread_reason"]


def _participants(app: App, number: int) -> set[str]:
    return {p["email"] for p in ticket_json(app, number)["participants"]}


def test_a_follow_up_by_tag_alone_adds_nobody_it_was_copied_to(app: App) -> None:
    """A forged From of a participant plus a guessed number must not subscribe an outsider."""
    number = _open_ticket(app)
    forged = make_mail(
        sender="Carol Customer <carol@customer.test>",
        subject=f"Re: [ACME #{number}] add my colleague",
        cc="mallory@evil.test, dave@customer.test",
    )
    outcome = ingest(app, forged)
    assert outcome.ticket_number == number  # the tag rule itself is unchanged
    assert "mallory@evil.test" not in _participants(app, number)
    with app.factory() as session:
        [event] = session.execute(select(Event).where(Event.kind == "copied_not_added")).scalars()
    # dave was copied on the ticket's first mail: only the newcomer is worth telling about.
    assert event.data["addresses"] == ["mallory@evil.test"]


def test_a_follow_up_by_reference_adds_the_people_copied(app: App) -> None:
    number = _open_ticket(app)
    reply = make_mail(
        subject=f"Re: [ACME #{number}] Printer on floor 3 is jammed",
        in_reply_to=ORIGINAL_ID,
        cc="erin@customer.test",
    )
    assert ingest(app, reply).ticket_number == number
    assert "erin@customer.test" in _participants(app, number)
    with app.factory() as session:
        assert not session.execute(select(Event).where(Event.kind == "copied_not_added")).first()


def test_reply_reopens_waiting_ticket(app: App) -> None:
    number = _open_ticket(app)
    with app.factory.begin() as session:
        ticket = get_ticket(session, number)
        change_status(session, ticket, TicketStatus.WAITING, actor=cli_actor(), now=app.clock.now())
    ingest(app, make_mail(subject=f"Re: [ACME #{number}] x", body="here is the info"))
    assert ticket_json(app, number)["status"] == "open"


def test_reply_to_closed_ticket_opens_a_new_one(app: App) -> None:
    number = _open_ticket(app)
    with app.factory.begin() as session:
        ticket = get_ticket(session, number)
        change_status(session, ticket, TicketStatus.CLOSED, actor=cli_actor(), now=app.clock.now())
    outcome = ingest(app, make_mail(subject=f"Re: [ACME #{number}] x", in_reply_to=ORIGINAL_ID))
    assert outcome.ticket_number not in (None, number)
    assert ticket_json(app, number)["status"] == "closed"


def test_dsn_never_opens_a_ticket(app: App) -> None:
    dsn = (
        b"From: MAILER-DAEMON@mx.example.com\r\nTo: support@example.com\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
        b"Final-Recipient: rfc822; gone@customer.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        b"--b--\r\n"
    )
    outcome = ingest(app, dsn)
    assert outcome.state == "processed"
    assert outcome.ticket_number is None
    assert _tickets(app) == 0


def test_events_record_who_and_what(app: App) -> None:
    from mailsupport.db.models import Event

    number = _open_ticket(app)
    with app.factory() as session:
        ticket = get_ticket(session, number)
        kinds = [
            (e.kind, e.actor)
            for e in session.execute(select(Event).where(Event.ticket_id == ticket.id)).scalars()
        ]
    assert ("created", "contact:carol@customer.test") in kinds
    assert ("message", "contact:carol@customer.test") in kinds


def test_two_replies_racing(app: App) -> None:
    """Two follow-ups processed at the same time both land on the ticket, nothing lost."""
    number = _open_ticket(app)
    replies = [
        make_mail(subject=f"Re: [ACME #{number}] x", body=f"reply {i}", in_reply_to=ORIGINAL_ID)
        for i in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def run(raw: bytes) -> None:
        barrier.wait()
        outcomes.append(ingest(app, raw))

    threads = [threading.Thread(target=run, args=(raw,)) for raw in replies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.ticket_number == number for o in outcomes)  # type: ignore[attr-defined]
    texts = sorted(m["text"].strip() for m in inbound(ticket_json(app, number))[1:])
    assert texts == ["reply 0", "reply 1"]


def test_new_tickets_racing_get_distinct_sequential_numbers(app: App) -> None:
    barrier = threading.Barrier(6)
    numbers: list[int] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        raw = make_mail(sender=f"c{i}@customer.test", subject=f"problem {i}")
        barrier.wait()
        outcome = ingest(app, raw)
        with lock:
            numbers.append(outcome.ticket_number)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]


def test_same_mail_twice_is_one_message(app: App) -> None:
    raw = make_mail(message_id="<twice@customer.test>")
    first = ingest(app, raw, channel="smtp")
    second = ingest(app, b"Received: from relay\r\n" + raw, channel="gateway")
    assert first.ticket_number == 1
    assert second is None  # already stored and processed
    assert len(inbound(ticket_json(app, 1))) == 1


def test_a_follow_up_marks_its_ticket_changed(app: App, clock: FrozenClock) -> None:
    number = _open_ticket(app)
    opened = ticket_json(app, number)["updated_at"]
    clock.advance(timedelta(hours=2))

    ingest(app, make_mail(subject=f"Re: [ACME #{number}] Printer", in_reply_to=ORIGINAL_ID))

    data = ticket_json(app, number)
    assert data["status"] == "new"  # nothing to reopen: only the time moves
    assert data["updated_at"] > opened
    assert datetime.fromisoformat(data["updated_at"]) == clock.now()


def test_the_log_names_each_message_and_its_ticket(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailsupport.pipeline.runner")
    ingest(app, make_mail(message_id="<named@customer.test>"))
    without_id = make_mail(subject="Second").replace(b"Message-ID:", b"X-Old-Message-ID:", 1)
    ingest(app, without_id)
    lines = [r.getMessage() for r in caplog.records if r.name == "mailsupport.pipeline.runner"]
    assert any(line.startswith("message <named@customer.test> ") for line in lines), lines
    assert any(line.startswith("message without Message-ID ") for line in lines), lines
    assert not any("<>" in line for line in lines), lines
    assert all("ticket #" in line for line in lines), lines
