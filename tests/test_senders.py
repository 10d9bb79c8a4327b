"""Who a mail is from when its From is missing, malformed or unusable."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from mailsupport.app import App
from mailsupport.core.message import Address
from mailsupport.core.parse import parse_message
from mailsupport.db.inbox import RawMail, store_one
from mailsupport.db.models import Inbound
from mailsupport.pipeline.identify import ENVELOPE, FROM, REPLY_TO, SENDER, sender_address
from mailsupport.pipeline.runner import Outcome, Pipeline

from support import ingest, ticket_json

LONG_DOMAIN = "zed@" + "d" * 252 + ".test"


def _mail(*headers: str) -> bytes:
    lines = ["To: support@example.com", "Subject: Printer on floor 3 is jammed", *headers]
    return ("\r\n".join(lines) + "\r\n\r\nThe printer is jammed again.\r\n").encode()


def _deliver(app: App, raw: bytes, envelope_from: str | None) -> Outcome:
    with app.factory.begin() as session:
        mail = RawMail(raw, "gateway", envelope_from, ("support@example.com",))
        stored = store_one(session, mail, app.clock.now())
    outcome = Pipeline(app.factory, app.config, app.clock).process_one(stored.inbound_id)
    assert outcome is not None
    return outcome


@pytest.mark.parametrize(
    ("headers", "envelope", "expected"),
    [
        (["From: carol@customer.test", "Reply-To: r@customer.test"], "e@x.test", FROM),
        (["Reply-To: r@customer.test"], "alice@example.org", ENVELOPE),
        (["Reply-To: r@customer.test", "Sender: s@customer.test"], "", REPLY_TO),
        (["Reply-To: r@customer.test"], "MAILER-DAEMON@mx.example.org", REPLY_TO),
        (["Sender: Secretary <s@customer.test>"], "<>", SENDER),
        # Mail without an envelope of its channel (an import): the Return-Path header.
        (["Return-Path: <alice@example.org>", "Reply-To: r@customer.test"], None, ENVELOPE),
        ([f"From: Junk <{LONG_DOMAIN}>"], "alice@example.org", ENVELOPE),
        (["Sender: support@example.com"], "support+bounce-1-x@example.com", None),
        ([], "", None),
    ],
)
def test_the_sender_is_from_then_envelope_then_reply_to_then_sender(
    app: App, headers: list[str], envelope: str | None, expected: str | None
) -> None:
    found = sender_address(parse_message(_mail(*headers)), envelope, app.config)
    assert (found.source if found else None) == expected


def test_mail_without_a_from_opens_a_ticket_for_its_envelope_sender(app: App) -> None:
    outcome = _deliver(app, _mail("Message-ID: <no-from@example.org>"), "Alice@Example.org")
    assert outcome.detail == (
        "ticket #1: new ticket (sender from the envelope sender: alice@example.org)"
    )
    ticket = ticket_json(app, 1)
    assert ticket["requester"] == "alice@example.org"
    assert ticket["messages"][0]["from"] == "alice@example.org"
    with app.factory() as session:
        stored = session.execute(select(Inbound.outcome)).scalar_one()
    assert stored == outcome.detail


def test_a_null_or_mailer_daemon_envelope_sender_is_nobody_to_answer(app: App) -> None:
    for envelope in ("", "<>", "MAILER-DAEMON@mx.example.org"):
        outcome = _deliver(app, _mail(f"Message-ID: <{len(envelope)}@example.org>"), envelope)
        assert outcome.state == "quarantined"
        assert outcome.detail == "unusable: the message has no usable From address"


@pytest.mark.parametrize(
    ("from_", "expected"),
    [
        ("<power quadrant system@example.com>", Address('"power quadrant system"@example.com')),
        ('"..."@example.com>', Address('"..."@example.com')),
        ("Test test@example.com", Address("test@example.com", "Test")),
        ("Carol Customer <carol@customer.test", Address("carol@customer.test", "Carol Customer")),
    ],
)
def test_malformed_from_forms_of_real_mail_are_read(from_: str, expected: Address) -> None:
    parsed = parse_message(_mail(f"From: {from_}"))
    assert parsed.from_ == expected
    assert f"from: read as {expected.email!r}" in parsed.defects


def test_mail_with_a_malformed_from_opens_a_ticket_rather_than_being_quarantined(
    app: App,
) -> None:
    outcome = ingest(app, _mail("From: Test test@customer.test"))
    assert outcome.state == "processed", outcome.detail
    assert outcome.detail == "ticket #1: new ticket"
    ticket = ticket_json(app, 1)
    assert ticket["requester"] == "test@customer.test"
    assert (ticket["messages"][0]["from"], ticket["messages"][0]["from_name"]) == (
        "test@customer.test",
        "Test",
    )
