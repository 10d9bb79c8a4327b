"""Loops between people's auto-responders, played for real through the listener and a relay.

The daemon runs in-process with its SMTP listener; the relay is an aiosmtpd sink. The test
plays naive auto-responders: each answers every mail the sink catches for its address, with
no Auto-Submitted header and the same text every time, quoting what it answers. The clock is
frozen, so everything happens within one loop window unless a test moves it.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Any

import pytest
from sqlalchemy import func, select

from mailsupport.app import App
from mailsupport.clock import FrozenClock
from mailsupport.config import Config, build_config
from mailsupport.daemon import Daemon
from mailsupport.db.models import Event, Inbound, InboundState, Outbox, OutboxState
from mailsupport.domain.operators import add_operator, join_queue
from mailsupport.domain.tickets import get_or_create_queue

from _fixtures import config_data
from sink import Received, Sink
from support import ingest, make_mail, ticket_json, wait_for

CUSTOMER = "carol@customer.test"
ALICE = "alice@example.com"
# Enough rounds for a loop to show itself; a broken loop goes quiet long before.
ROUNDS = 12


def loop_config(db_url: str, relay: Sink, **limits: Any) -> Config:
    data = config_data(
        db_url,
        relay={"port": relay.port, "timeout": 5.0},
        notifications={"combine_seconds": 0},
        outbound={"send_interval": 0.2},
        limits=limits,
    )
    return build_config(data, env={})


def start(config: Config, clock: FrozenClock) -> Daemon:
    daemon = Daemon(config, clock=clock, worker_processes=False)
    daemon.start()
    with _app(daemon).factory.begin() as session:
        queue = get_or_create_queue(session, "support")
        join_queue(session, add_operator(session, ALICE, "Alice", clock.now()), queue)
    return daemon


@pytest.fixture
def running(db_url: str, relay: Sink, clock: FrozenClock) -> Iterator[Daemon]:
    daemon = start(loop_config(db_url, relay), clock)
    try:
        yield daemon
    finally:
        daemon.stop()


def _app(daemon: Daemon) -> App:
    assert daemon.app is not None
    return daemon.app


def _quiet(daemon: Daemon) -> bool:
    """Nothing stored waits for the pipeline and nothing queued waits for the relay."""
    with _app(daemon).factory() as session:
        inbound = session.scalar(select(func.count()).where(Inbound.state == InboundState.PENDING))
        outbox = session.scalar(select(func.count()).where(Outbox.state == OutboxState.PENDING))
    return inbound == 0 and outbox == 0


def submit(daemon: Daemon, mail_from: str, rcpt: str, raw: bytes) -> None:
    assert daemon.smtp_address is not None
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.sendmail(mail_from, [rcpt], raw)


def quoted(mail: EmailMessage) -> str:
    """The usual "On ... wrote:" and the answered mail's text quoted below it."""
    body = mail.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    lines = "".join(f"> {line}\n" for line in text.splitlines())
    return f"\n\nOn {mail['Date']}, {mail['From']} wrote:\n{lines}"


@dataclass(frozen=True)
class Answer:
    to: str
    raw: bytes


@dataclass
class Responder:
    """A naive auto-responder: answers every mail, same text, no Auto-Submitted."""

    address: str
    text: str
    answer_to: Callable[[Received], str]
    threaded: bool = True
    varying: bool = False  # numbers its answers, so that no two say quite the same
    answered: int = 0

    def answer(self, mail: Received) -> Answer:
        self.answered += 1
        message = mail.message
        text = f"{self.text} (answer {self.answered})" if self.varying else self.text
        subject = (
            f"Re: {message['Subject']}" if self.threaded else f"Your mail {self.answered} arrived"
        )
        thread = (
            {"in_reply_to": message["Message-ID"], "references": message["Message-ID"]}
            if self.threaded
            else {}
        )
        to = self.answer_to(mail)
        raw = make_mail(
            sender=self.address,
            to=to,
            subject=subject,
            body=text + quoted(message),
            **thread,
        )
        return Answer(to, raw)


def reply_to_or_from(mail: Received) -> str:
    message = mail.message
    return parseaddr(message["Reply-To"] or message["From"])[1]


def return_path(mail: Received) -> str:
    return mail.mail_from


def play(daemon: Daemon, relay: Sink, responders: list[Responder], rounds: int = ROUNDS) -> int:
    """Let the responders answer everything the relay gets; returns the rounds it took to end.

    Raises if the exchange is still going after ``rounds`` rounds.
    """
    by_address = {r.address: r for r in responders}
    seen = 0
    for round_number in range(rounds):
        wait_for(lambda: _quiet(daemon), timeout=30)
        new = relay.received[seen:]
        seen += len(new)
        if not new:
            return round_number
        for mail in new:
            for rcpt in mail.rcpt_tos:
                if rcpt in by_address:
                    answer = by_address[rcpt].answer(mail)
                    submit(daemon, rcpt, answer.to, answer.raw)
    raise AssertionError(f"still looping after {rounds} rounds: {len(relay.received)} mails")


def suppressed(app: App) -> list[Event]:
    with app.factory() as session:
        statement = select(Event).where(Event.kind == "auto_reply_suppressed").order_by(Event.id)
        return list(session.execute(statement).scalars())


CUSTOMER_AWAY = "Thank you for your message. I am out of the office until Monday."
ALICE_AWAY = "I am on leave this week; your mail will be read when I am back."


def test_operator_and_customer_responders_stop_each_other(running: Daemon, relay: Sink) -> None:
    """Alice's responder answers her notifications at her signed address, Carol's answers
    what we relay; each side gets at most two mails before the loop is broken."""
    carol = Responder(CUSTOMER, CUSTOMER_AWAY, reply_to_or_from)
    alice = Responder(ALICE, ALICE_AWAY, reply_to_or_from)
    submit(running, CUSTOMER, "support@example.com", make_mail(body="The printer is jammed."))
    play(running, relay, [carol, alice])

    assert len(relay.to(CUSTOMER)) <= 2
    assert len(relay.to(ALICE)) <= 2
    held = suppressed(_app(running))
    # Alice's responder repeating itself is not relayed; Carol's is not mailed to Alice.
    assert {e.data["mail"] for e in held} == {"reply", "operator_follow_up"}
    assert all("same text" in e.data["reason"] for e in held)
    data = ticket_json(_app(running), 1)
    assert [m["text"] for m in data["messages"] if m["from"].endswith(CUSTOMER)][-1] == (
        CUSTOMER_AWAY
    )


def test_customer_responder_changing_its_subject_gets_two_acknowledgements(
    running: Daemon, relay: Sink
) -> None:
    """Each answer opens a ticket (no thread headers, a new subject); the repeats are
    acknowledged no more, across tickets, and the operators are not told of them."""
    carol = Responder(CUSTOMER, CUSTOMER_AWAY, reply_to_or_from, threaded=False)
    submit(running, CUSTOMER, "support@example.com", make_mail(body="The printer is jammed."))
    play(running, relay, [carol])

    acknowledgements = [r for r in relay.to(CUSTOMER) if r.message["Auto-Submitted"]]
    assert len(acknowledgements) == len(relay.to(CUSTOMER)) == 2
    held = suppressed(_app(running))
    assert {e.data["mail"] for e in held} == {"acknowledgement", "operator_new_ticket"}
    assert {e.new for e in held} == {CUSTOMER, ALICE}
    assert all("same text" in e.data["reason"] for e in held)
    assert len(relay.to(ALICE)) == 2  # the first two tickets


def test_mail_to_our_bounce_address_that_is_no_report(running: Daemon, relay: Sink) -> None:
    """A responder answering the return path of our acknowledgement: kept with its ticket,
    no acknowledgement, nobody told; without a ticket to join it opens none."""
    carol = Responder(CUSTOMER, CUSTOMER_AWAY, return_path)
    submit(running, CUSTOMER, "support@example.com", make_mail(body="The printer is jammed."))
    play(running, relay, [carol])

    [ack] = relay.to(CUSTOMER)
    assert ack.mail_from.startswith("support+bounce-")
    assert len(relay.to(ALICE)) == 1  # the new ticket, not the responder's answer
    [kept] = [m for m in ticket_json(_app(running), 1)["messages"] if m["direction"] == "in"][1:]
    assert (kept["kind"], kept["text"]) == ("auto_reply", CUSTOMER_AWAY)

    stray = make_mail(subject="Hello", body="Is this address read by anyone?")
    submit(running, CUSTOMER, ack.mail_from, stray)
    wait_for(lambda: _quiet(running), timeout=30)
    with _app(running).factory() as session:
        row = session.execute(select(Inbound).order_by(Inbound.id.desc())).scalars().first()
        assert row is not None and row.state == InboundState.PROCESSED
        assert row.outcome is not None and "bounce address" in row.outcome
    assert len(relay.to(CUSTOMER)) == 1
    with _app(running).factory() as session:
        assert session.scalar(select(func.count()).select_from(Outbox)) == 2


def relayed(relay: Sink) -> list[Received]:
    """Operators' replies relayed to the customer (they carry no Auto-Submitted)."""
    return [r for r in relay.to(CUSTOMER) if r.message["Auto-Submitted"] is None]


def test_responders_that_never_repeat_themselves_are_stopped_by_the_caps(
    db_url: str, relay: Sink, clock: FrozenClock
) -> None:
    """Numbered answers defeat the repetition check; the caps per ticket end the loop, and
    once the window has passed the ticket's mail flows again."""
    limits = {"relays_per_ticket_per_window": 2, "notifications_per_ticket_per_window": 3}
    daemon = start(loop_config(db_url, relay, **limits), clock)
    try:
        carol = Responder(CUSTOMER, CUSTOMER_AWAY, reply_to_or_from, varying=True)
        alice = Responder(ALICE, ALICE_AWAY, reply_to_or_from, varying=True)
        submit(daemon, CUSTOMER, "support@example.com", make_mail(body="The printer is jammed."))
        play(daemon, relay, [carol, alice])

        assert len(relay.to(ALICE)) == 3
        assert len(relayed(relay)) == 2
        reasons = {e.data["mail"]: e.data["reason"] for e in suppressed(_app(daemon))}
        assert "already relayed 2 replies in the last 60 minutes" in reasons["reply"]
        assert "already got 3 mails about the ticket" in reasons["operator_follow_up"]

        clock.advance(timedelta(minutes=61))
        notification = relay.to(ALICE)[-1]
        answer = make_mail(
            sender=ALICE,
            to=reply_to_or_from(notification),
            subject=f"Re: {notification.message['Subject']}",
            body="Please try the other tray.",
        )
        submit(daemon, ALICE, reply_to_or_from(notification), answer)
        wait_for(lambda: len(relayed(relay)) == 3, timeout=30)
        follow_up = make_mail(subject="Re: [ACME #1] x", body="The other tray works. Thanks!")
        submit(daemon, CUSTOMER, "support@example.com", follow_up)
        wait_for(lambda: len(relay.to(ALICE)) == 4, timeout=30)
    finally:
        daemon.stop()


def test_a_repeat_counts_only_within_the_window(app: App, clock: FrozenClock) -> None:
    """The same text an hour and more later is a person writing again."""
    from mailsupport.db.models import Outbox as Row

    def acknowledgements() -> int:
        with app.factory() as session:
            statement = select(func.count()).where(Row.kind == "acknowledgement")
            return int(session.scalar(statement) or 0)

    body = "Our printer is jammed again."
    ingest(app, make_mail(subject="Printer", body=body))
    clock.advance(timedelta(minutes=30))
    ingest(app, make_mail(subject="Printer again", body=f"  {body.upper()}\n"))
    assert acknowledgements() == 1
    clock.advance(timedelta(minutes=61))  # 91 minutes after the first, 61 after the repeat
    ingest(app, make_mail(subject="Printer, later", body=body))
    assert acknowledgements() == 2
    kinds = [ticket_json(app, n)["messages"][0]["kind"] for n in (1, 2, 3)]
    assert kinds == ["normal", "auto_reply", "normal"]


def test_a_first_mail_is_fingerprinted_when_its_sender_writes_again(app: App) -> None:
    """Quote stripping is slow: a sender's first mail in the window is left without a
    fingerprint unless that costs nothing, and worked out from what was stored if needed."""
    from mailsupport.db.models import Message

    def mail(number: int) -> bytes:
        message = EmailMessage()
        message["From"], message["To"] = CUSTOMER, "support@example.com"
        message["Subject"] = f"Printer {number}"
        message.set_content("The printer at https://printers.customer.test/3 is jammed.")
        message.add_attachment(b"\x89PNG photo", maintype="image", subtype="png", filename="p.png")
        return message.as_bytes()

    ingest(app, mail(1))
    with app.factory() as session:
        statement = select(Message.body_hash).where(Message.direction == "in")
        assert session.execute(statement).scalar_one() is None
    ingest(app, mail(2))
    assert [ticket_json(app, n)["messages"][0]["kind"] for n in (1, 2)] == ["normal", "auto_reply"]
    [held] = suppressed(app)
    assert (held.new, held.data["mail"]) == (CUSTOMER, "acknowledgement")


def test_the_loop_lookups_go_by_index(sqlite_url: str) -> None:
    """Every mail that comes in costs these lookups: none may read a whole table."""
    from sqlalchemy import create_engine

    from mailsupport.db.migrate import upgrade
    from mailsupport.domain import messages
    from mailsupport.outbound import policy

    values = {"sender": "a@b.test", "since": "2026-03-02 09:00:00", "ticket_id": 1}
    engine = create_engine(sqlite_url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            for statement, index in [
                (messages._RECENT, "ix_messages_sender_created"),
                (messages._RECENT_ON_TICKET, "ix_messages_sender_created"),
                (policy._RELAYED, "ix_outbox_ticket_created"),
                (policy._ABOUT_TICKET_TO, "ix_outbox_ticket_created"),
            ]:
                compiled = statement.compile(dialect=engine.dialect)
                given = {**compiled.params, **values, "address": "a@b.test"}
                positional = tuple(given[name] for name in compiled.positiontup or ())
                plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", positional)
                details = " / ".join(row[-1] for row in plan)
                assert f"INDEX {index}" in details, details
                assert "SCAN" not in details.replace(f"SCAN {index}", ""), details
    finally:
        engine.dispose()


def test_a_repeat_does_not_reopen_a_ticket_waiting_on_the_customer(app: App) -> None:
    from mailsupport.db.models import TicketStatus
    from mailsupport.domain.actors import cli_actor
    from mailsupport.domain.tickets import change_status, get_ticket

    def wait_on_customer() -> None:
        with app.factory.begin() as session:
            ticket = get_ticket(session, 1)
            change_status(
                session, ticket, TicketStatus.WAITING, actor=cli_actor(), now=app.clock.now()
            )

    ingest(app, make_mail(message_id="<first@customer.test>", body="The printer is jammed."))
    for expected in ("open", "waiting"):
        wait_on_customer()
        answer = make_mail(subject="Re: [ACME #1] Printer", body=CUSTOMER_AWAY)
        ingest(app, answer)
        assert ticket_json(app, 1)["status"] == expected
