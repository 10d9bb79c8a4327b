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
from support import make_mail, ticket_json, wait_for

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
