"""Mail that finally fails: recorded on the ticket, and its operators told once, never in a loop.

The relay is the real aiosmtpd sink refusing chosen addresses; the clock is frozen and moved
to reach the time the sender gives up.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from email.utils import parseaddr

import pytest
from sqlalchemy import select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import build_config
from mailsupport.db.models import Event, Outbox, OutboxRecipient
from mailsupport.domain.operators import add_operator, join_queue
from mailsupport.domain.tickets import get_or_create_queue
from mailsupport.outbound.failures import NOTICE
from mailsupport.outbound.sender import OutboxSender

from _fixtures import config_data
from sink import Received, Sink
from support import ingest, make_mail

CUSTOMER = "carol@customer.test"
ALICE = "alice@example.com"
BOB = "bob@example.com"


@pytest.fixture
def app(db_url: str, relay: Sink, clock: FrozenClock) -> Iterator[App]:
    data = config_data(
        db_url, relay={"port": relay.port, "timeout": 5.0}, notifications={"combine_seconds": 0}
    )
    application = open_app(build_config(data, env={}), clock=clock, migrate=True)
    yield application
    application.close()


def add_operators(app: App, queue: str = "support") -> None:
    with app.factory.begin() as session:
        members = get_or_create_queue(session, queue)
        for email, name in ((ALICE, "Alice"), (BOB, "Bob")):
            join_queue(session, add_operator(session, email, name, app.clock.now()), members)


def send_all(app: App) -> None:
    """Sweep until nothing is due, as the scheduler would over a few seconds."""
    sender = OutboxSender(app.factory, app.config, app.clock)
    while sender.send_due():
        pass


def notices(relay: Sink, address: str) -> list[Received]:
    return [r for r in relay.to(address) if "Undeliverable:" in r.message["Subject"]]


def notice_rows(app: App) -> list[tuple[str, str]]:
    """(recipient, state) of every failure notice queued."""
    with app.factory() as session:
        rows = session.execute(
            select(OutboxRecipient.address, Outbox.state)
            .join(Outbox, Outbox.id == OutboxRecipient.outbox_id)
            .where(Outbox.kind == NOTICE)
            .order_by(OutboxRecipient.address)
        )
        return [(address, state) for address, state in rows]


def failures(app: App) -> list[str]:
    with app.factory() as session:
        events = session.execute(select(Event).where(Event.kind == "delivery_failed"))
        return sorted(e.new or "" for e in events.scalars())


def test_refused_mail_is_told_to_the_queue_once(app: App, relay: Sink) -> None:
    add_operators(app)
    relay.handler.refuse[CUSTOMER] = "550 5.1.1 no such user"
    ingest(app, make_mail())  # opens #1: an acknowledgement the relay refuses
    send_all(app)
    send_all(app)
    assert failures(app) == [CUSTOMER]
    assert relay.to(CUSTOMER) == []
    assert notice_rows(app) == [(ALICE, "sent"), (BOB, "sent")]  # never the customer
    for operator in (ALICE, BOB):
        [notice] = notices(relay, operator)
        mail = notice.message
        assert mail["Subject"] == "[ACME #1] Undeliverable: Printer on floor 3 is jammed"
        assert mail["Auto-Submitted"] == "auto-generated"
        assert parseaddr(mail["Reply-To"])[1].startswith("support+1-")  # signed for them
        body = mail.get_body(("plain",)).get_content()
        assert f"{CUSTOMER}: 550 5.1.1 no such user" in body
        assert "mailsupport outbox retry" in body


def test_giving_up_is_told_to_the_queue(app: App, relay: Sink, clock: FrozenClock) -> None:
    add_operators(app)
    relay.handler.refuse[CUSTOMER] = "451 4.2.1 mailbox busy, try later"
    ingest(app, make_mail())
    send_all(app)
    assert notices(relay, ALICE) == [] and failures(app) == []  # only retrying so far
    for _ in range(60):  # past give_up_after_hours (4 days)
        clock.advance(timedelta(hours=2))
        send_all(app)
    assert failures(app) == [CUSTOMER]
    for operator in (ALICE, BOB):
        [notice] = notices(relay, operator)
        body = notice.message.get_body(("plain",)).get_content()
        assert "gave up after" in body and "451 4.2.1 mailbox busy" in body
    assert relay.to(CUSTOMER) == []


def test_a_failure_notice_that_fails_tells_nobody(
    app: App, relay: Sink, clock: FrozenClock
) -> None:
    """Every operator mailbox is dead too: each failure is recorded, and the telling stops."""
    add_operators(app)
    for address in (CUSTOMER, ALICE, BOB):
        relay.handler.refuse[address] = "550 5.1.1 no such user"
    ingest(app, make_mail())
    sender = OutboxSender(app.factory, app.config, app.clock)
    for _ in range(10):  # bounded: a loop would keep queueing notices
        sender.send_due()
        clock.advance(timedelta(hours=1))
    # The acknowledgement failed: both told. Alice's new-ticket mail failed: Bob told (not
    # Alice, whose address it is), and the other way round. Those four notices fail in turn
    # and are recorded, but tell nobody.
    assert notice_rows(app) == [
        (ALICE, "failed"),
        (ALICE, "failed"),
        (BOB, "failed"),
        (BOB, "failed"),
    ]
    assert failures(app) == [ALICE, ALICE, ALICE, BOB, BOB, BOB, CUSTOMER]
    assert relay.received == []


def test_nobody_in_the_queue_every_operator_is_told(app: App, relay: Sink) -> None:
    add_operators(app, queue="sales")  # nobody works the support queue
    relay.handler.refuse[CUSTOMER] = "550 5.1.1 no such user"
    ingest(app, make_mail())
    send_all(app)
    send_all(app)
    assert notice_rows(app) == [(ALICE, "sent"), (BOB, "sent")]


def _dsn(bounce_address: str, recipient: str, message_id: str, status: str, n: int = 1) -> bytes:
    """A report as Postfix sends it once it gives up: "Action: failed", whatever the status."""
    return (
        f"From: MAILER-DAEMON@mx.customer.test\r\nTo: {bounce_address}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn{n}@mx.customer.test>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; "
        'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nI gave up.\r\n'
        "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.customer.test\r\n"
        f"\r\nFinal-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 451 4.4.7 delivery time expired\r\n\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <{message_id}>\r\n"
        "\r\n--b--\r\n"
    ).encode()


def _bounce(app: App, relay: Sink, address: str, n: int = 1, status: str = "4.4.7") -> None:
    """The MTA's report that the last mail we sent to ``address`` could not be delivered."""
    mail = relay.to(address)[-1]
    ingest(
        app,
        _dsn(mail.mail_from, address, mail.message["Message-ID"].strip("<>"), status, n),
        envelope_to=(mail.mail_from,),
    )


def test_a_bounce_report_is_told_to_the_queue_once(app: App, relay: Sink) -> None:
    """Behind an MTA the relay accepts everything: a failure comes back as a report."""
    add_operators(app)
    ingest(app, make_mail())
    send_all(app)
    assert len(relay.to(CUSTOMER)) == 1  # the acknowledgement, accepted by the relay
    _bounce(app, relay, CUSTOMER)
    with app.factory() as session:
        ack = session.execute(
            select(OutboxRecipient).where(OutboxRecipient.address == CUSTOMER)
        ).scalar_one()
        assert ack.state == "bounced"
    send_all(app)
    for operator in (ALICE, BOB):
        [notice] = notices(relay, operator)
        body = notice.message.get_body(("plain",)).get_content()
        assert f"{CUSTOMER}: bounced: 4.4.7 451 4.4.7 delivery time expired" in body
        assert "mailsupport outbox retry" in body
    _bounce(app, relay, CUSTOMER, n=2, status="5.4.7")  # another report about the same mail
    send_all(app)
    assert [len(notices(relay, o)) for o in (ALICE, BOB)] == [1, 1]
    assert relay.to(CUSTOMER)[1:] == []  # never the customer


def test_a_bounced_failure_notice_tells_nobody(app: App, relay: Sink) -> None:
    add_operators(app)
    ingest(app, make_mail())
    send_all(app)
    _bounce(app, relay, CUSTOMER)
    send_all(app)
    sent = len(relay.received)
    _bounce(app, relay, ALICE, n=2)  # Alice's mailbox is gone: the notice to her bounces
    send_all(app)
    assert len(relay.received) == sent
    assert notice_rows(app) == [(ALICE, "sent"), (BOB, "sent")]
