"""Operators working by mail: notifications, replies relayed, commands, notes, forgeries."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from datetime import timedelta
from email.utils import getaddresses, parseaddr
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mailsupport.app import App, open_app
from mailsupport.clock import FrozenClock
from mailsupport.config import Config, build_config
from mailsupport.core.replyaddr import day_number, reply_address, token
from mailsupport.daemon import Daemon
from mailsupport.db.models import Event, Inbound, Operator, Setting, TimeEntry
from mailsupport.domain.operators import add_address, add_operator, join_queue, remove_operator
from mailsupport.domain.settings import UNDATED_REPLY_DAY, reply_keys
from mailsupport.domain.tickets import get_or_create_queue
from mailsupport.outbound.sender import OutboxSender

from _fixtures import config_data, write_config
from sink import Received, Sink
from support import inbound, ingest, make_mail, run_cli, ticket_json, wait_for

CUSTOMER = "carol@customer.test"
CUSTOMER_ID = "<problem@customer.test>"
ALICE = "alice@example.com"
BOB = "bob@example.com"
AUTHSERV = "mx.example.com"


def operator_config(db_url: str, relay: Sink, **sections: dict[str, Any]) -> Config:
    data = config_data(
        db_url,
        relay={"port": relay.port, "timeout": 5.0},
        notifications={"combine_seconds": 0},
        support={"comment_address": "support-comment@example.com", "trusted_authserv_id": AUTHSERV},
    )
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build_config(data, env={})


def add_staff(app: App) -> None:
    with app.factory.begin() as session:
        queue = get_or_create_queue(session, "support")
        for email, name in ((ALICE, "Alice"), (BOB, "Bob")):
            join_queue(session, add_operator(session, email, name, app.clock.now()), queue)


@pytest.fixture
def staff_app(db_url: str, relay: Sink, clock: FrozenClock) -> Iterator[App]:
    app = open_app(operator_config(db_url, relay), clock=clock, migrate=True)
    add_staff(app)
    yield app
    app.close()


def send(app: App) -> int:
    return OutboxSender(app.factory, app.config, app.clock).send_due()


def signed(app: App, number: int, operator_email: str) -> str:
    with app.factory() as session:
        operator = session.execute(
            select(Operator).where(Operator.email == operator_email)
        ).scalar_one()
        secret = reply_keys(session, app.config).current
        day = day_number(app.clock.now())
        return reply_address("support@example.com", number, operator.id, secret, day)


def events(app: App, kind: str) -> list[Event]:
    with app.factory() as session:
        return list(session.execute(select(Event).where(Event.kind == kind)).scalars())


def open_ticket(app: App, relay: Sink) -> Received:
    """A customer writes; returns the notification Alice gets."""
    ingest(app, make_mail(message_id=CUSTOMER_ID, body="The printer on floor 3 is jammed.\nCarol"))
    send(app)
    [notification] = relay.to(ALICE)
    return notification


def reply(app: App, to: str, body: str, *, sender: str = ALICE, **kw: Any) -> Any:
    raw = make_mail(
        sender=sender, to=to, subject="Re: [ACME #1] Printer on floor 3 is jammed", body=body, **kw
    )
    return ingest(app, raw, envelope_to=(to,))


def customer_copies(relay: Sink) -> list[Received]:
    return [r for r in relay.to(CUSTOMER) if r.message["Auto-Submitted"] is None]


# --- notifications ---------------------------------------------------------------------------


def test_new_ticket_is_mailed_to_the_queue_with_a_signed_reply_to(
    staff_app: App, relay: Sink
) -> None:
    notification = open_ticket(staff_app, relay)
    message = notification.message
    assert message["Subject"].startswith("[ACME #1] ")
    assert parseaddr(message["Reply-To"])[1] == signed(staff_app, 1, ALICE)
    body = message.get_body(("plain",)).get_content()
    assert "The printer on floor 3 is jammed." in body
    assert "#status" in body and "Requester" in body
    assert message["Auto-Submitted"] == "auto-generated"
    assert len(relay.to(BOB)) == 1
    assert parseaddr(relay.to(BOB)[0].message["Reply-To"])[1] == signed(staff_app, 1, BOB)


def test_follow_up_goes_to_the_assignee_only(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    reply(staff_app, signed(staff_app, 1, ALICE), "#take")
    ingest(
        staff_app, make_mail(subject="Re: [ACME #1] x", body="Any news?", in_reply_to=CUSTOMER_ID)
    )
    send(staff_app)
    assert [r.message["Subject"] for r in relay.to(ALICE)][-1].startswith("[ACME #1]")
    assert "Any news?" in relay.to(ALICE)[-1].message.get_body(("plain",)).get_content()
    assert len(relay.to(BOB)) == 1  # only the new-ticket mail


# --- replies relayed -------------------------------------------------------------------------

QUOTE_STYLES = {
    "gmail": "On Mon, 2 Mar 2026 at 09:00, ACME Support <support@example.com> wrote:\n\n> New ticket from Carol\n> The printer on floor 3 is jammed.\n",
    "outlook": "________________________________\nFrom: ACME Support <support@example.com>\nSent: Monday, March 2, 2026 9:00 AM\nTo: Alice <alice@example.com>\nSubject: [ACME #1] New: Printer on floor 3 is jammed\n\nNew ticket from Carol\nThe printer on floor 3 is jammed.\n",
    "apple": "> On 2 Mar 2026, at 09:00, ACME Support <support@example.com> wrote:\n> \n> New ticket from Carol\n> The printer on floor 3 is jammed.\n",
    "thunderbird": "On 02.03.2026 09:00, ACME Support wrote:\n> New ticket from Carol\n> The printer on floor 3 is jammed.\n",
    "mailru": "Понедельник, 2 марта 2026, 9:00 +03:00 от ACME Support <support@example.com>:\n\n> New ticket from Carol\n> The printer on floor 3 is jammed.\n",
    "yandex": '02.03.2026, 09:00, "ACME Support" <support@example.com>:\n> New ticket from Carol\n> The printer on floor 3 is jammed.\n',
}


@pytest.mark.parametrize("style", sorted(QUOTE_STYLES))
def test_reply_is_relayed_without_quote_or_operator_address(
    staff_app: App, relay: Sink, style: str
) -> None:
    open_ticket(staff_app, relay)
    body = "Please switch it off and on again.\n\n" + QUOTE_STYLES[style]
    outcome = reply(staff_app, signed(staff_app, 1, ALICE), body)
    assert "relayed" in outcome.detail
    send(staff_app)
    [copy] = customer_copies(relay)
    message = copy.message
    text = message.get_body(("plain",)).get_content()
    assert "Please switch it off and on again." in text
    assert "jammed" not in text and "wrote" not in text and "ACME Support <" not in text
    assert parseaddr(message["From"]) == ("Alice via ACME Support", "support@example.com")
    assert ALICE.encode() not in copy.data
    assert message["Subject"] == "Re: [ACME #1] Printer on floor 3 is jammed"
    assert message["In-Reply-To"] and CUSTOMER_ID in message["References"]
    assert ticket_json(staff_app, 1)["first_response_at"] is not None


def test_a_signature_naming_the_operators_addresses_is_relayed_without_them(
    staff_app: App, relay: Sink
) -> None:
    with staff_app.factory.begin() as session:
        alice = session.execute(select(Operator).where(Operator.email == ALICE)).scalar_one()
        add_address(session, alice, "alice@phone.example.net")
    open_ticket(staff_app, relay)
    body = (
        "Please switch it off and on again.\n\n--\nAlice Smith, ACME\n"
        "Alice@Example.com | mailto:alice@example.com | <alice+work@example.com>\n"
        "mobile: alice@phone.example.net\n"
    )
    reply(staff_app, signed(staff_app, 1, ALICE), body)
    send(staff_app)
    [copy] = customer_copies(relay)
    text = copy.message.get_body(("plain",)).get_content()
    assert b"alice@" not in copy.data.lower() and b"alice+work@" not in copy.data.lower()
    assert "support@example.com | mailto:support@example.com | <support@example.com>" in text
    assert "mobile: support@example.com" in text and "Alice Smith, ACME" in text
    # The operator's own copy on the ticket keeps what they wrote.
    [own] = [m for m in inbound(ticket_json(staff_app, 1)) if m["internal"]]
    assert "mailto:alice@example.com" in own["text"]


def test_reply_with_attachment_and_participants(staff_app: App, relay: Sink) -> None:
    ingest(staff_app, make_mail(message_id=CUSTOMER_ID, cc="dave@customer.test"))
    send(staff_app)
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, signed(staff_app, 1, ALICE), "Re: x"
    msg.set_content("Here is the manual.")
    msg.add_attachment(
        b"%PDF-1.4 manual", maintype="application", subtype="pdf", filename="manual.pdf"
    )
    ingest(staff_app, msg.as_bytes(), envelope_to=(signed(staff_app, 1, ALICE),))
    send(staff_app)
    [copy] = customer_copies(relay)
    assert [a for _, a in getaddresses([copy.message["Cc"]])] == ["dave@customer.test"]
    [attachment] = list(copy.message.iter_attachments())
    assert attachment.get_filename() == "manual.pdf"
    assert attachment.get_content() == b"%PDF-1.4 manual"


def test_one_canned_answer_reaches_every_ticket_but_only_once_each(
    staff_app: App, relay: Sink
) -> None:
    """Operators send one text to many customers; only its repetition on one ticket is a
    responder's (answering each of the ticket's notifications)."""
    open_ticket(staff_app, relay)
    ingest(staff_app, make_mail(sender="frank@customer.test", subject="Scanner", body="Broken."))
    canned = "This is fixed now; please write again if it comes back."
    assert "relayed" in reply(staff_app, signed(staff_app, 1, ALICE), canned).detail
    to_frank = signed(staff_app, 2, ALICE)
    raw = make_mail(sender=ALICE, to=to_frank, subject="Re: [ACME #2] Scanner", body=canned)
    assert "relayed" in ingest(staff_app, raw, envelope_to=(to_frank,)).detail
    again = reply(staff_app, signed(staff_app, 1, ALICE), canned + "\n\n" + QUOTE_STYLES["gmail"])
    assert "not relayed" in again.detail and "same text on this ticket once before" in again.detail
    send(staff_app)
    assert len(customer_copies(relay)) == 1
    assert len([r for r in relay.to("frank@customer.test") if not r.message["Auto-Submitted"]]) == 1
    [held] = events(staff_app, "auto_reply_suppressed")
    assert (held.new, held.data["mail"]) == (CUSTOMER, "reply")
    assert ticket_json(staff_app, 1)["messages"][-1]["text"] == canned  # kept, internal


# --- commands --------------------------------------------------------------------------------


def test_commands_act_through_the_domain_and_notify_the_customer(
    staff_app: App, relay: Sink
) -> None:
    open_ticket(staff_app, relay)
    body = "#status waiting\n#priority high\n#assign bob\n#time 30m phone call\n\nCould you send a photo of the display?\n"
    outcome = reply(staff_app, signed(staff_app, 1, ALICE), body)
    assert "relayed" in outcome.detail
    data = ticket_json(staff_app, 1)
    assert (data["status"], data["priority"], data["assignee"]) == ("waiting", "high", BOB)
    with staff_app.factory() as session:
        entry = session.execute(select(TimeEntry)).scalar_one()
        assert (entry.minutes, entry.work_type) == (30, "phone call")
    status_events = events(staff_app, "status")
    assert status_events[-1].actor == f"operator:{ALICE}"
    send(staff_app)
    copies = customer_copies(relay)
    assert len(copies) == 1
    text = copies[0].message.get_body(("plain",)).get_content()
    assert "#status" not in text and "Could you send a photo" in text
    notices = [r for r in relay.to(CUSTOMER) if r.message["Auto-Submitted"] == "auto-replied"]
    assert len(notices) == 2  # the acknowledgement and the "waiting" notice


def test_take_queue_and_close(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    with staff_app.factory.begin() as session:
        get_or_create_queue(session, "sales")
    assert (
        "nothing to relay"
        in reply(staff_app, signed(staff_app, 1, ALICE), "#take\n#queue sales").detail
    )
    data = ticket_json(staff_app, 1)
    assert (data["assignee"], data["queue"]) == (ALICE, "sales")
    reply(staff_app, signed(staff_app, 1, ALICE), "#close")
    assert ticket_json(staff_app, 1)["status"] == "closed"
    send(staff_app)
    assert customer_copies(relay) == []  # commands only: nothing relayed
    closed = [r for r in relay.to(CUSTOMER) if "[ACME #1]" in r.message["Subject"]]
    assert len(closed) == 2  # acknowledgement + closed notice


def test_queue_command_names_a_configured_queue_no_mail_was_routed_to(
    staff_app: App, relay: Sink
) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(staff_app, signed(staff_app, 1, ALICE), "#queue sales")
    assert "nothing to relay" in outcome.detail, outcome.detail
    assert ticket_json(staff_app, 1)["queue"] == "sales"
    reply(staff_app, signed(staff_app, 1, ALICE), "#queue no-such-typo")
    send(staff_app)
    assert (
        "No such queue: no-such-typo"
        in relay.to(ALICE)[-1].message.get_body(("plain",)).get_content()
    )


def test_note_never_reaches_the_customer(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(
        staff_app, signed(staff_app, 1, ALICE), "#note\nCustomer is on the old firmware."
    )
    assert "internal note" in outcome.detail
    send(staff_app)
    assert customer_copies(relay) == []
    assert "old firmware" in relay.to(BOB)[-1].message.get_body(("plain",)).get_content()
    messages = ticket_json(staff_app, 1)["messages"]
    assert messages[-1]["internal"] is True


def test_comment_address_never_reaches_the_customer(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    raw = make_mail(
        sender=ALICE,
        to="support-comment@example.com",
        subject="Re: [ACME #1] Printer",
        body="Internal: ordered a new drum.",
        headers={"Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=example.com"},
    )
    outcome = ingest(
        staff_app, raw, envelope_to=("support-comment@example.com",), authres_trusted=True
    )
    assert "internal note" in outcome.detail
    send(staff_app)
    assert customer_copies(relay) == []


def test_unknown_command_gets_a_transcript_and_relays_nothing(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(
        staff_app, signed(staff_app, 1, ALICE), "#status waiting\n#frobnicate now\n\nHello Carol"
    )
    assert "nothing relayed" in outcome.detail
    send(staff_app)
    assert customer_copies(relay) == []
    transcript = relay.to(ALICE)[-1].message
    text = transcript.get_body(("plain",)).get_content()
    assert "#frobnicate now" in text and "unknown command" in text
    assert "#status waiting" in text
    assert parseaddr(transcript["Reply-To"])[1] == signed(staff_app, 1, ALICE)


def test_refused_command_gets_a_transcript(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    reply(staff_app, signed(staff_app, 1, ALICE), "#assign nobody\n\nHello Carol")
    send(staff_app)
    assert customer_copies(relay) == []
    assert (
        "No such operator: nobody" in relay.to(ALICE)[-1].message.get_body(("plain",)).get_content()
    )


def _time_entries(app: App) -> list[int]:
    with app.factory() as session:
        return list(session.execute(select(TimeEntry.minutes)).scalars())


def test_a_refused_command_applies_none_of_the_mail(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    body = "#status resolved\n#time 1h30m\n#frobnicate\n\nHello Carol, fixed."
    outcome = reply(staff_app, signed(staff_app, 1, ALICE), body)
    assert "none applied" in outcome.detail
    data = ticket_json(staff_app, 1)
    assert data["status"] == "new"
    assert _time_entries(staff_app) == []
    assert [e.kind for e in events(staff_app, "status")] == []
    send(staff_app)
    assert len(relay.to(CUSTOMER)) == 1  # the acknowledgement only: no notice, no reply
    transcript = relay.to(ALICE)[-1].message
    assert transcript["Subject"].startswith("[ACME #1] Commands not applied")
    text = transcript.get_body(("plain",)).get_content()
    assert "none of its commands was applied and nothing was sent to the customer" in text
    assert "REFUSED    #frobnicate: unknown command" in text
    assert "could run  #status resolved" in text and "status resolved:" not in text
    # The corrected mail is a new message: each of its commands is carried out once.
    fixed = "#status resolved\n#time 1h30m\n\nHello Carol, fixed."
    assert "relayed" in reply(staff_app, signed(staff_app, 1, ALICE), fixed).detail
    assert ticket_json(staff_app, 1)["status"] == "resolved"
    assert _time_entries(staff_app) == [90]
    send(staff_app)
    notices = [r for r in relay.to(CUSTOMER) if r.message["Auto-Submitted"] == "auto-replied"]
    assert len(notices) == 2 and len(customer_copies(relay)) == 1


def test_a_command_refused_when_run_undoes_those_before_it(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    with staff_app.factory.begin() as session:
        get_or_create_queue(session, "sales")
    body = "#take\n#queue sales\n#priority urgent\n#assign nobody\n\nOn it."
    reply(staff_app, signed(staff_app, 1, ALICE), body)
    data = ticket_json(staff_app, 1)
    assert (data["assignee"], data["queue"], data["priority"]) == (None, "support", "normal")
    assert events(staff_app, "assignee") == events(staff_app, "queue") == []


# --- forgeries -------------------------------------------------------------------------------


def _assert_untrusted(app: App, relay: Sink, status_before: str = "new") -> None:
    send(app)
    assert customer_copies(relay) == []
    assert ticket_json(app, 1)["status"] == status_before
    assert events(app, "operator_unverified") or len(ticket_json(app, 1)["messages"]) >= 1


def test_operator_without_token_runs_nothing(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    reply(staff_app, "support@example.com", "#status closed\n\nDone.", in_reply_to=CUSTOMER_ID)
    _assert_untrusted(staff_app, relay)
    [event] = events(staff_app, "operator_unverified")
    assert "no signed reply address" in event.data["reason"]


def test_token_of_another_ticket(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    ingest(staff_app, make_mail(sender="x@customer.test", subject="second"))
    other = signed(staff_app, 2, ALICE)
    reply(staff_app, other.replace("+2-", "+1-"), "#status closed\n\nDone.")
    _assert_untrusted(staff_app, relay)


def test_token_of_another_operator(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    reply(staff_app, signed(staff_app, 1, BOB), "#status closed\n\nDone.")
    _assert_untrusted(staff_app, relay)
    assert (
        "not signed for this operator" in events(staff_app, "operator_unverified")[0].data["reason"]
    )


def test_bad_token(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    good = signed(staff_app, 1, ALICE)
    local, domain = good.split("@")
    bad = local[:-4] + "aaaa@" + domain
    reply(staff_app, bad, "#status closed\n\nDone.")
    _assert_untrusted(staff_app, relay)


@pytest.mark.parametrize(
    "results",
    [
        ["evil.test; dkim=pass header.d=example.com"],
        [
            f"{AUTHSERV}; dkim=fail header.d=example.com",
            f"{AUTHSERV}; dkim=pass header.d=example.com",
        ],
        [f"{AUTHSERV}; dkim=pass header.d=other.test"],
    ],
    ids=["foreign-authserv", "forged-below-ours", "other-domain"],
)
def test_forged_authentication_results(staff_app: App, relay: Sink, results: list[str]) -> None:
    open_ticket(staff_app, relay)
    raw = make_mail(
        sender=ALICE,
        subject="Re: [ACME #1] x",
        body="#status closed\n\nDone.",
        in_reply_to=CUSTOMER_ID,
    )
    headers = "".join(f"Authentication-Results: {r}\r\n" for r in results).encode()
    ingest(staff_app, headers + raw, envelope_to=("support@example.com",), authres_trusted=True)
    _assert_untrusted(staff_app, relay)


def test_genuine_authentication_results_prove_the_operator(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    raw = make_mail(
        sender=ALICE,
        subject="Re: [ACME #1] x",
        body="#status waiting\n\nNeed a photo.",
        in_reply_to=CUSTOMER_ID,
        headers={"Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=example.com"},
    )
    outcome = ingest(staff_app, raw, envelope_to=("support@example.com",), authres_trusted=True)
    assert "relayed" in outcome.detail
    assert ticket_json(staff_app, 1)["status"] == "waiting"


def test_other_sender_with_a_good_token(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    reply(
        staff_app,
        signed(staff_app, 1, ALICE),
        "#status closed\n\nDone.",
        sender="mallory@evil.test",
    )
    send(staff_app)
    assert customer_copies(relay) == []
    assert ticket_json(staff_app, 1)["status"] == "new"
    assert [e.new for e in events(staff_app, "operator_unverified")] == ["mallory@evil.test"]


def _participants(app: App, number: int = 1) -> list[str]:
    return sorted(p["email"] for p in ticket_json(app, number)["participants"])


def test_a_stranger_answering_an_operators_notification_joins_nothing(
    staff_app: App, relay: Sink
) -> None:
    notification = open_ticket(staff_app, relay)
    outcome = reply(
        staff_app,
        signed(staff_app, 1, ALICE),
        "#status closed\n\nI am Carol's boss, keep me posted.",
        sender="Mallory <mallory@evil.test>",
        cc="eve@evil.test",
        in_reply_to=notification.message["Message-ID"],
    )
    assert outcome.ticket_number == 1
    assert "kept internal" in outcome.detail and "someone who is not one" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]
    [kept] = [m for m in ticket_json(staff_app, 1)["messages"] if "boss" in m["text"]]
    assert kept["internal"] is True and kept["from"] == "mallory@evil.test"
    assert ticket_json(staff_app, 1)["status"] == "new"
    send(staff_app)
    assert relay.to("mallory@evil.test") == [] and relay.to("eve@evil.test") == []
    assert len(relay.to(BOB)) == 1  # nobody was told of it as a customer's follow-up
    reply(staff_app, signed(staff_app, 1, BOB), "We are on it.", sender=BOB)
    send(staff_app)
    [copy] = customer_copies(relay)
    assert copy.rcpt_tos == [CUSTOMER]


def test_answering_an_operators_notification_at_the_support_address_joins_nothing(
    staff_app: App, relay: Sink
) -> None:
    notification = open_ticket(staff_app, relay)
    outcome = reply(
        staff_app,
        "support@example.com",
        "Add me, please.",
        sender="mallory@evil.test",
        references=f"{CUSTOMER_ID} {notification.message['Message-ID']}",
    )
    assert "kept internal" in outcome.detail and "sent to operators only" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]
    # The customer's own answer to their acknowledgement is the conversation, as ever.
    [ack] = relay.to(CUSTOMER)
    followed = reply(
        staff_app,
        "support@example.com",
        "More detail.",
        sender=CUSTOMER,
        in_reply_to=ack.message["Message-ID"],
        cc="dave@customer.test",
    )
    assert "references" in followed.detail
    assert _participants(staff_app) == [CUSTOMER, "dave@customer.test"]


def test_a_stranger_writing_to_the_comment_address_is_kept_internal(
    staff_app: App, relay: Sink
) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(
        staff_app,
        "support-comment@example.com",
        "Internal: refund them.",
        sender="mallory@evil.test",
        in_reply_to=CUSTOMER_ID,
    )
    assert "kept internal" in outcome.detail and "comment address" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]
    assert inbound(ticket_json(staff_app, 1))[-1]["internal"] is True


def test_an_operator_using_a_colleagues_token_stays_internal(staff_app: App, relay: Sink) -> None:
    notification = open_ticket(staff_app, relay)
    quoted = "".join(
        f"> {line}\n"
        for line in notification.message.get_body(("plain",)).get_content().splitlines()
    )
    outcome = reply(staff_app, signed(staff_app, 1, BOB), "Bob, can you take this?\n\n" + quoted)
    assert "kept internal" in outcome.detail and "not signed for this operator" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]
    messages = ticket_json(staff_app, 1)["messages"]
    assert [m["internal"] for m in messages if "Requester" in m["text"]] == [True]
    reply(staff_app, signed(staff_app, 1, BOB), "We are on it.", sender=BOB)
    send(staff_app)
    assert [c.rcpt_tos for c in customer_copies(relay)] == [[CUSTOMER]]


def test_a_customer_writing_to_an_operators_reply_address_is_kept_internal(
    staff_app: App, relay: Sink
) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(staff_app, signed(staff_app, 1, ALICE), "Any news?", sender=CUSTOMER)
    assert "kept internal" in outcome.detail
    assert inbound(ticket_json(staff_app, 1))[-1]["internal"] is True
    send(staff_app)
    assert len(relay.to(ALICE)) == 1  # no follow-up notification


def test_an_operator_copied_by_a_customer_never_takes_part(staff_app: App, relay: Sink) -> None:
    with staff_app.factory.begin() as session:
        alice = session.execute(select(Operator).where(Operator.email == ALICE)).scalar_one()
        add_address(session, alice, "alice@phone.example.net")
        bob = session.execute(select(Operator).where(Operator.email == BOB)).scalar_one()
        bob.active = False
    ingest(
        staff_app,
        make_mail(message_id=CUSTOMER_ID, cc=f"Alice <{ALICE}>, dave@customer.test, {BOB}"),
    )
    assert _participants(staff_app) == [CUSTOMER, "dave@customer.test"]
    ingest(
        staff_app,
        make_mail(
            subject="Re: [ACME #1] Printer",
            to="support@example.com, alice@phone.example.net",
            cc="erin@customer.test",
            in_reply_to=CUSTOMER_ID,
        ),
    )
    assert _participants(staff_app) == [CUSTOMER, "dave@customer.test", "erin@customer.test"]


def test_an_operator_without_proof_answering_the_customer_stays_internal(
    staff_app: App, relay: Sink
) -> None:
    """Reply-all to the customer's own mail: no token, no DKIM."""
    open_ticket(staff_app, relay)
    outcome = reply(
        staff_app, f"support@example.com, {CUSTOMER}", "Fixed, Carol.", in_reply_to=CUSTOMER_ID
    )
    assert "kept internal" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]
    assert inbound(ticket_json(staff_app, 1))[-1]["internal"] is True


def test_an_inactive_operators_address_is_still_no_customers(staff_app: App, relay: Sink) -> None:
    open_ticket(staff_app, relay)
    with staff_app.factory.begin() as session:
        remove_operator(session, BOB)
    outcome = reply(staff_app, "support@example.com", "Hi", sender=BOB, in_reply_to=CUSTOMER_ID)
    assert "inactive operator" in outcome.detail
    assert _participants(staff_app) == [CUSTOMER]


def test_a_bounce_to_an_operators_reply_address_is_still_a_bounce(
    staff_app: App, relay: Sink
) -> None:
    notification = open_ticket(staff_app, relay)
    dsn = (
        f"From: MAILER-DAEMON@mx.example.com\r\nTo: {signed(staff_app, 1, ALICE)}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.com>\r\n"
        f"In-Reply-To: {notification.message['Message-ID']}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nI'm sorry to have to inform you...\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.com\r\n\r\n"
        f"Final-Recipient: rfc822; {ALICE}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--b--\r\n"
    ).encode()
    outcome = ingest(staff_app, dsn, envelope_to=(signed(staff_app, 1, ALICE),))
    assert outcome.state == "processed" and "kept internal" not in outcome.detail
    assert events(staff_app, "operator_unverified") == []


def _quarantined(app: App, inbound_id: int) -> str:
    from mailsupport.db.models import Inbound, InboundState

    with app.factory() as session:
        row = session.get(Inbound, inbound_id)
        assert row is not None and row.state == InboundState.QUARANTINED, row and row.outcome
        return row.quarantine_reason or ""


@pytest.mark.parametrize("proven", [True, False], ids=["dkim", "unproven"])
def test_an_operators_mail_naming_no_ticket_opens_none(
    staff_app: App, relay: Sink, proven: bool
) -> None:
    raw = make_mail(sender=ALICE, subject="Lunch?", body="Anyone?", headers=DKIM if proven else {})
    outcome = ingest(staff_app, raw, envelope_to=("support@example.com",), authres_trusted=True)
    reason = _quarantined(staff_app, outcome.inbound_id)
    assert reason.startswith("held for review: ")
    assert ("an operator is never a ticket's customer" in reason) is proven
    with staff_app.factory() as session:
        assert session.execute(select(Event)).first() is None


def test_mail_to_a_reply_address_of_no_ticket_opens_none(staff_app: App, relay: Sink) -> None:
    outcome = reply(staff_app, signed(staff_app, 7, ALICE), "Hello", sender="x@evil.test")
    assert "used by someone who is not one" in _quarantined(staff_app, outcome.inbound_id)


@pytest.mark.parametrize("original", [BOB, "support@example.com"])
def test_a_forward_never_opens_a_ticket_for_an_operator_or_us(
    staff_app: App, relay: Sink, original: str
) -> None:
    body = (
        "FYI\n\n---------- Forwarded message ---------\n"
        f"From: Someone <{original}>\nDate: Mon, 2 Mar 2026 at 08:00\n"
        "Subject: Printer\nTo: Alice <alice@example.com>\n\nThe printer is broken.\n"
    )
    raw = make_mail(sender=ALICE, subject="Fwd: Printer", body=body, headers=DKIM)
    outcome = ingest(staff_app, raw, envelope_to=("support@example.com",))
    assert "held for review" in _quarantined(staff_app, outcome.inbound_id)


def test_an_operator_is_never_added_from_the_command_line(
    staff_app: App, relay: Sink, tmp_path: Any
) -> None:
    from _fixtures import write_config
    from support import run_cli

    open_ticket(staff_app, relay)
    with staff_app.factory.begin() as session:
        alice = session.execute(select(Operator).where(Operator.email == ALICE)).scalar_one()
        add_address(session, alice, "alice@phone.example.net")
    data = config_data(staff_app.config.database.url)
    config_file = str(write_config(tmp_path / "c.toml", data))
    for address in (ALICE, "Alice@Phone.Example.net"):
        result = run_cli(config_file, "participants", "add", "1", address)
        assert result.exit_code == 1
        assert result.output.strip() == (
            f"{address.lower()} is an operator's address: operators get a ticket's mail as "
            "operators, never as one of its customers"
        )
    assert _participants(staff_app) == [CUSTOMER]


def test_a_participant_who_became_an_operator_gets_no_customer_mail(
    staff_app: App, relay: Sink
) -> None:
    ingest(staff_app, make_mail(message_id=CUSTOMER_ID, cc="dave@customer.test"))
    with staff_app.factory.begin() as session:
        add_operator(session, "dave@customer.test", "Dave", staff_app.clock.now())
    reply(staff_app, signed(staff_app, 1, ALICE), "#status waiting\n\nA photo, please?")
    send(staff_app)
    [copy] = customer_copies(relay)
    assert copy.rcpt_tos == [CUSTOMER]
    assert relay.to("dave@customer.test") == []
    [held] = [
        e for e in events(staff_app, "auto_reply_suppressed") if e.new == "dave@customer.test"
    ]
    assert held.data["reason"] == "it is an operator's address"


# --- forward to open ---------------------------------------------------------------------------

DKIM = {"Authentication-Results": f"{AUTHSERV}; dkim=pass header.d=example.com"}


def test_inline_forward_opens_a_ticket_for_the_customer(staff_app: App, relay: Sink) -> None:
    body = (
        "Please look at this one.\n\n"
        "---------- Forwarded message ---------\n"
        "From: Erin Example <erin@customer.test>\n"
        "Date: Mon, 2 Mar 2026 at 08:00\n"
        "Subject: VPN does not connect\n"
        "To: Alice <alice@example.com>\n\n"
        "Since this morning the VPN does not connect.\n"
    )
    raw = make_mail(sender=ALICE, subject="Fwd: VPN does not connect", body=body, headers=DKIM)
    outcome = ingest(staff_app, raw, envelope_to=("support@example.com",), authres_trusted=True)
    data = ticket_json(staff_app, outcome.ticket_number)
    assert data["requester"] == "erin@customer.test"
    assert data["subject"] == "VPN does not connect"
    assert "VPN does not connect" in data["messages"][0]["text"]
    send(staff_app)
    [ack] = relay.to("erin@customer.test")
    assert ack.message["Subject"].startswith(f"[ACME #{outcome.ticket_number}]")


def test_attached_forward_opens_a_ticket_for_the_customer(staff_app: App, relay: Sink) -> None:
    from email.message import EmailMessage

    original = make_mail(
        sender="Frank <frank@customer.test>",
        subject="Invoice missing",
        body="I did not get my invoice.",
    )
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = ALICE, "support@example.com", "Fwd: Invoice missing"
    msg["Authentication-Results"] = DKIM["Authentication-Results"]
    msg.set_content("For billing.")
    msg.add_attachment(original, maintype="message", subtype="rfc822")
    outcome = ingest(
        staff_app, msg.as_bytes(), envelope_to=("support@example.com",), authres_trusted=True
    )
    data = ticket_json(staff_app, outcome.ticket_number)
    assert data["requester"] == "frank@customer.test"
    assert "I did not get my invoice." in data["messages"][0]["text"]
    send(staff_app)
    assert len(relay.to("frank@customer.test")) == 1


# --- the full loop over real SMTP ----------------------------------------------------------------


def test_full_loop_through_the_listener(db_url: str, relay: Sink) -> None:
    config = operator_config(db_url, relay, outbound={"send_interval": 0.2})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.app is not None
        add_staff(daemon.app)
        assert daemon.smtp_address is not None
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail(CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
        notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0].message
        reply_to = parseaddr(notification["Reply-To"])[1]
        answer = make_mail(
            sender="Alice <alice@example.com>",
            to=reply_to,
            subject=f"Re: {notification['Subject']}",
            body="It is fixed now.\n\n" + QUOTE_STYLES["gmail"],
            in_reply_to=notification["Message-ID"],
            references=notification["Message-ID"],
        )
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail(ALICE, [reply_to], answer)
        copy = wait_for(lambda: customer_copies(relay), timeout=30)[0]
        text = copy.message.get_body(("plain",)).get_content()
        assert text.strip().startswith("It is fixed now.")
        assert "jammed" not in text
        assert ALICE.encode() not in copy.data
    finally:
        daemon.stop()


def test_customer_follow_up_reaches_operators_without_the_quoted_acknowledgement(
    db_url: str, relay: Sink
) -> None:
    config = operator_config(db_url, relay, outbound={"send_interval": 0.2})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.app is not None and daemon.smtp_address is not None
        add_staff(daemon.app)
        with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
            client.sendmail(CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
        ack = wait_for(lambda: relay.to(CUSTOMER), timeout=30)[0].message
        ack_text = ack.get_body(("plain",)).get_content()
        assert "registered it as request" in ack_text
        outlook = (
            "The drum is new, it still jams.\n\nCarol\n\n________________________________\n"
            f"From: ACME Support <support@example.com>\nSent: Monday, March 2, 2026 9:00 AM\n"
            f"To: Carol Customer <{CUSTOMER}>\nSubject: {ack['Subject']}\n\n{ack_text}"
        )
        gmail = "Any news?\n\nOn Mon, Mar 2, 2026 at 9:00 AM ACME Support <support@example.com>"
        gmail += " wrote:\n\n" + "".join(f"> {line}\n" for line in ack_text.splitlines())
        for number, body in enumerate((outlook, gmail), start=2):
            follow_up = make_mail(
                subject=f"RE: {ack['Subject']}", body=body, in_reply_to=ack["Message-ID"]
            )
            with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
                client.sendmail(CUSTOMER, ["support@example.com"], follow_up)
            wait_for(lambda n=number: len(relay.to(ALICE)) == n, timeout=30)
        new_texts = ["The drum is new, it still jams.\n\nCarol", "Any news?"]
        notices = [
            r.message.get_body(("plain",)).get_content().replace("\r\n", "\n")
            for r in relay.to(ALICE)[1:]
        ]
        # "<author> wrote:", a blank line, the text, then the ticket's summary after "--".
        assert [n.split("\n\n", 1)[1].split("\n--\n", 1)[0].strip() for n in notices] == new_texts
        assert all("registered it as request" not in notice for notice in notices)
        stored = [m for m in ticket_json(daemon.app, 1)["messages"] if m["direction"] == "in"]
        assert [m["text"] for m in stored[1:]] == new_texts
        assert "registered it as request" in stored[1]["text_full"]
    finally:
        daemon.stop()


# --- scenarios through the daemon: a real listener, the relay a sink -----------------------------


@pytest.fixture
def staff_daemon(db_url: str, relay: Sink) -> Iterator[Daemon]:
    config = operator_config(db_url, relay, outbound={"send_interval": 0.2})
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    try:
        assert daemon.app is not None
        add_staff(daemon.app)
        yield daemon
    finally:
        daemon.stop()


def _app(daemon: Daemon) -> App:
    assert daemon.app is not None
    return daemon.app


def _submit(daemon: Daemon, sender: str, recipients: list[str], raw: bytes) -> None:
    assert daemon.smtp_address is not None
    with smtplib.SMTP(*daemon.smtp_address, timeout=30) as client:
        client.sendmail(sender, recipients, raw)


def _processed(daemon: Daemon, count: int) -> None:
    """Wait until ``count`` stored mails have been through the pipeline."""
    from mailsupport.db.models import Inbound, InboundState

    def done() -> bool:
        with _app(daemon).factory() as session:
            states = session.execute(select(Inbound.state)).scalars().all()
        return sum(state != InboundState.PENDING for state in states) >= count

    wait_for(done, timeout=30)


def _answer(daemon: Daemon, to: Received, body: str, *, sender: str, **kw: Any) -> None:
    """Reply to a caught mail as a mail client does: to its Reply-To, threaded under it."""
    caught = to.message
    reply_to = parseaddr(caught["Reply-To"])[1]
    raw = make_mail(
        sender=sender,
        to=reply_to,
        subject=f"Re: {caught['Subject']}",
        body=body,
        in_reply_to=caught["Message-ID"],
        references=caught["Message-ID"],
        **kw,
    )
    _submit(daemon, parseaddr(sender)[1], [reply_to], raw)


def _outbox_kinds(daemon: Daemon) -> list[str]:
    from mailsupport.db.models import Outbox

    with _app(daemon).factory() as session:
        return list(session.execute(select(Outbox.kind).order_by(Outbox.id)).scalars())


def test_daemon_a_mail_with_a_refused_command_changes_nothing_until_resent(
    staff_daemon: Daemon, relay: Sink
) -> None:
    _submit(staff_daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    _answer(
        staff_daemon,
        notification,
        "#status resolved\n#time 1h30m\n#frobnicate\n\nAll fixed, Carol.",
        sender="Alice <alice@example.com>",
    )
    transcript = wait_for(lambda: relay.to(ALICE)[1:], timeout=30)[0]
    text = transcript.message.get_body(("plain",)).get_content()
    assert "none of its commands was applied and nothing was sent to the customer" in text
    assert "REFUSED    #frobnicate: unknown command" in text
    app = _app(staff_daemon)
    assert ticket_json(app, 1)["status"] == "new"
    assert _time_entries(app) == []
    # Queued in the transaction that queued the transcript, were it queued at all.
    assert _outbox_kinds(staff_daemon) == [
        "acknowledgement",
        "operator_new_ticket",
        "operator_new_ticket",
        "operator_transcript",
    ]
    _answer(
        staff_daemon,
        transcript,
        "#status resolved\n#time 1h30m\n\nAll fixed, Carol.",
        sender="Alice <alice@example.com>",
    )
    wait_for(lambda: customer_copies(relay) and len(relay.to(CUSTOMER)) >= 3, timeout=30)
    assert ticket_json(app, 1)["status"] == "resolved"
    assert _time_entries(app) == [90]
    kinds = _outbox_kinds(staff_daemon)
    assert kinds.count("status") == 1 and kinds.count("reply") == 1
    [relayed] = customer_copies(relay)
    assert relayed.message.get_body(("plain",)).get_content().strip() == "All fixed, Carol."


def test_daemon_start_makes_the_configured_queues(staff_daemon: Daemon, relay: Sink) -> None:
    from mailsupport.db.models import Queue

    with _app(staff_daemon).factory() as session:
        assert sorted(session.execute(select(Queue.name)).scalars()) == ["sales", "support"]
    _submit(staff_daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    _answer(staff_daemon, notification, "#queue sales\n#take", sender=ALICE)
    _processed(staff_daemon, 2)
    data = ticket_json(_app(staff_daemon), 1)
    assert (data["queue"], data["assignee"]) == ("sales", ALICE)


def test_daemon_nobody_joins_through_an_operators_reply_address(
    staff_daemon: Daemon, relay: Sink
) -> None:
    """Strangers and operators reaching a ticket through operators' mail never become its
    customers: the next relayed reply goes to the customers only."""
    first = make_mail(message_id=CUSTOMER_ID, cc=f"dave@customer.test, Alice <{ALICE}>")
    _submit(staff_daemon, CUSTOMER, ["support@example.com"], first)
    to_alice = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    to_bob = wait_for(lambda: relay.to(BOB), timeout=30)[0]
    ack = wait_for(lambda: relay.to(CUSTOMER), timeout=30)[0]
    # Mallory got hold of Alice's notification and answers it, copying a friend.
    _answer(
        staff_daemon,
        to_alice,
        "#status closed\n\nI'm Carol's manager, keep me posted.",
        sender="Mallory <mallory@evil.test>",
        cc="eve@evil.test",
    )
    # Alice answers the notification Bob forwarded her, quoting its internal summary.
    summary = to_bob.message.get_body(("plain",)).get_content()
    quoted = "".join(f"> {line}\n" for line in summary.splitlines())
    _answer(staff_daemon, to_bob, "Bob, yours?\n\n" + quoted, sender=f"Alice <{ALICE}>")
    # Eve answers the notification too, but to the support address.
    eve = make_mail(
        sender="eve@evil.test",
        subject=f"Re: {to_alice.message['Subject']}",
        body="Me too.",
        in_reply_to=to_alice.message["Message-ID"],
    )
    _submit(staff_daemon, "eve@evil.test", ["support@example.com"], eve)
    # The customer answers the acknowledgement, copying Alice's own address.
    _answer(staff_daemon, ack, "Still jammed.", sender=CUSTOMER, cc=ALICE)
    _processed(staff_daemon, 5)
    app = _app(staff_daemon)
    data = ticket_json(app, 1)
    assert sorted(p["email"] for p in data["participants"]) == [CUSTOMER, "dave@customer.test"]
    assert data["status"] == "new"  # Mallory's #status closed ran nowhere
    internal = [m["from"] for m in inbound(data) if m["internal"]]
    assert internal == ["mallory@evil.test", ALICE, "eve@evil.test"]
    assert not any("Requester:" in m["text"] for m in inbound(data) if not m["internal"])
    # Bob answers his notification: the reply goes to the customers and nobody else.
    _answer(staff_daemon, to_bob, "Please try the rear tray.", sender=f"Bob <{BOB}>")
    [copy] = wait_for(lambda: customer_copies(relay), timeout=30)
    assert sorted(copy.rcpt_tos) == [CUSTOMER, "dave@customer.test"]
    shown = [a for _, a in getaddresses([copy.message["To"], copy.message["Cc"] or ""]) if a]
    assert sorted(shown) == [CUSTOMER, "dave@customer.test"]
    _processed(staff_daemon, 6)
    assert relay.to("mallory@evil.test") == relay.to("eve@evil.test") == []
    assert all(r.message["Auto-Submitted"] == "auto-generated" for r in relay.to(ALICE))


# --- Authentication-Results count only on mail that came through our MTA ------------------------


def _authres_daemon(db_url: str, relay: Sink, *, lmtp: bool, relays: list[str]) -> Daemon:
    config = operator_config(
        db_url,
        relay,
        outbound={"send_interval": 0.2},
        smtp={"lmtp": lmtp},
        support={"trusted_relays": relays},
    )
    daemon = Daemon(config, worker_processes=False)
    daemon.start()
    return daemon


def _send_over(daemon: Daemon, sender: str, recipients: list[str], raw: bytes) -> None:
    """Submit over SMTP or, when the listener speaks it, LMTP."""
    assert daemon.smtp_address is not None and daemon.app is not None
    if not daemon.app.config.smtp.lmtp:
        _submit(daemon, sender, recipients, raw)
        return
    with smtplib.LMTP(*daemon.smtp_address) as client:
        client.sendmail(sender, recipients, raw)


def _alice_with_dkim_pass(daemon: Daemon) -> None:
    """A customer opens ticket 1; mail from Alice's address with a DKIM pass closes it."""
    _send_over(daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    _processed(daemon, 1)
    answer = make_mail(
        sender=ALICE,
        subject="Re: [ACME #1] x",
        body="#status closed\n\nDone.",
        in_reply_to=CUSTOMER_ID,
        headers=DKIM,
    )
    _send_over(daemon, ALICE, ["support@example.com"], answer)
    _processed(daemon, 2)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_daemon_authentication_results_from_an_untrusted_client_prove_nothing(
    db_url: str, relay: Sink, lmtp: bool
) -> None:
    """Mail that reaches the listener directly carries whatever headers its sender wrote."""
    daemon = _authres_daemon(db_url, relay, lmtp=lmtp, relays=["192.0.2.0/24"])
    try:
        app = _app(daemon)
        add_staff(app)
        _alice_with_dkim_pass(daemon)
        assert ticket_json(app, 1)["status"] == "new"
        [event] = events(app, "operator_unverified")
        assert "did not come through a trusted relay" in event.data["reason"]
        assert [m["internal"] for m in inbound(ticket_json(app, 1))] == [False, True]
        assert customer_copies(relay) == []
    finally:
        daemon.stop()


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
def test_daemon_authentication_results_from_a_trusted_relay_prove_the_operator(
    db_url: str, relay: Sink, lmtp: bool
) -> None:
    daemon = _authres_daemon(db_url, relay, lmtp=lmtp, relays=["192.0.2.7", "127.0.0.0/8"])
    try:
        app = _app(daemon)
        add_staff(app)
        _alice_with_dkim_pass(daemon)
        assert ticket_json(app, 1)["status"] == "closed"
        assert events(app, "operator_unverified") == []
    finally:
        daemon.stop()


# --- reply addresses expire, and their key can be replaced ---------------------------------------

EXPIRED_SUBJECT = "Reply address expired, nothing done: "


@pytest.fixture
def dated_daemon(db_url: str, relay: Sink, clock: FrozenClock) -> Iterator[Daemon]:
    config = operator_config(
        db_url, relay, outbound={"send_interval": 0.2}, operators={"reply_address_days": 90}
    )
    daemon = Daemon(config, clock=clock, worker_processes=False)
    daemon.start()
    try:
        add_staff(_app(daemon))
        yield daemon
    finally:
        daemon.stop()


def _refused_then_resent(daemon: Daemon, relay: Sink, notification: Received, reason: str) -> None:
    """Alice's answer to ``notification`` does nothing and brings her a fresh address, which
    then works."""
    app = _app(daemon)
    _answer(daemon, notification, "#status waiting\n\nA photo, please.", sender=ALICE)
    [renewal] = wait_for(
        lambda: [r for r in relay.to(ALICE) if EXPIRED_SUBJECT in r.message["Subject"]],
        timeout=30,
    )
    text = renewal.message.get_body(("plain",)).get_content()
    assert reason in text and "none of its commands was applied" in text
    assert renewal.message["In-Reply-To"] is not None
    old, fresh = (parseaddr(m["Reply-To"])[1] for m in (notification.message, renewal.message))
    assert fresh != old and fresh == signed(app, 1, ALICE)
    assert ticket_json(app, 1)["status"] == "new"
    assert customer_copies(relay) == []
    [event] = events(app, "operator_unverified")
    assert reason in event.data["reason"]
    assert [m["internal"] for m in inbound(ticket_json(app, 1))] == [False, True]
    _answer(daemon, renewal, "#status waiting\n\nA photo, please.", sender=ALICE)
    [copy] = wait_for(lambda: customer_copies(relay), timeout=30)
    assert copy.message.get_body(("plain",)).get_content().strip() == "A photo, please."
    assert ticket_json(app, 1)["status"] == "waiting"


def test_daemon_an_expired_reply_address_does_nothing_and_brings_a_fresh_one(
    dated_daemon: Daemon, relay: Sink, clock: FrozenClock
) -> None:
    _submit(dated_daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    clock.advance(timedelta(days=91))
    _refused_then_resent(dated_daemon, relay, notification, "reply address expired")


def test_daemon_a_reply_address_acts_for_its_whole_lifetime(
    dated_daemon: Daemon, relay: Sink, clock: FrozenClock
) -> None:
    _submit(dated_daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    clock.advance(timedelta(days=90, hours=14))  # the 90th day after, at 23:00
    _answer(dated_daemon, notification, "#status waiting\n\nA photo, please.", sender=ALICE)
    wait_for(lambda: customer_copies(relay), timeout=30)
    assert ticket_json(_app(dated_daemon), 1)["status"] == "waiting"


def test_daemon_rotating_the_secret_retires_reply_addresses_but_not_bounce_addresses(
    dated_daemon: Daemon, relay: Sink, db_url: str, tmp_path: Path
) -> None:
    _submit(dated_daemon, CUSTOMER, ["support@example.com"], make_mail(message_id=CUSTOMER_ID))
    notification = wait_for(lambda: relay.to(ALICE), timeout=30)[0]
    [ack] = wait_for(lambda: relay.to(CUSTOMER), timeout=30)
    config_file = str(write_config(tmp_path / "c.toml", config_data(db_url)))
    rotated = run_cli(config_file, "operators", "rotate-secret")
    assert rotated.exit_code == 0, rotated.output
    assert "no longer act" in rotated.output
    _refused_then_resent(dated_daemon, relay, notification, "a key since replaced")
    # The acknowledgement sent before still has its bounce come back to it: by its return path
    # alone, as this report names neither it nor its Message-ID.
    dsn = (
        "From: MAILER-DAEMON@mx.customer.test\r\nTo: " + ack.mail_from + "\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.customer.test>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nNo such user.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.customer.test\r\n\r\n"
        f"Final-Recipient: rfc822; {CUSTOMER}\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--b--\r\n"
    ).encode()
    _submit(dated_daemon, "", [ack.mail_from], dsn)
    _processed(dated_daemon, 4)
    with _app(dated_daemon).factory() as session:
        row = session.execute(select(Inbound).where(Inbound.message_id == "dsn1@mx.customer.test"))
        assert row.scalar_one().disposition == "bounce"


def test_rotate_secret_is_refused_when_the_config_names_the_secret(tmp_path: Path) -> None:
    data = config_data(f"sqlite:///{tmp_path / 'm.db'}", support={"secret": "s3cret"})
    config_file = str(write_config(tmp_path / "c.toml", data))
    result = run_cli(config_file, "operators", "rotate-secret")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "[support] secret" in result.output and "change it there" in result.output


def test_a_stranger_with_an_expired_reply_address_is_told_nothing(
    staff_app: App, relay: Sink, clock: FrozenClock
) -> None:
    open_ticket(staff_app, relay)
    address = signed(staff_app, 1, ALICE)
    clock.advance(timedelta(days=200))
    reply(staff_app, address, "#status closed\n\nDone.", sender="mallory@evil.test")
    send(staff_app)
    assert len(relay.to(ALICE)) == 1  # the notification, nothing more
    [event] = events(staff_app, "operator_unverified")
    assert "used by someone who is not one" in event.data["reason"]
    assert ticket_json(staff_app, 1)["status"] == "new"


def _undated(app: App, number: int, operator_email: str) -> str:
    """A reply address as versions before dated ones signed it."""
    with app.factory() as session:
        operator = session.execute(
            select(Operator).where(Operator.email == operator_email)
        ).scalar_one()
        secret = reply_keys(session, app.config).current
    return f"support+{number}-{token(number, operator.id, secret, None)}@example.com"


@pytest.mark.parametrize(("days", "acts"), [(90, True), (91, False)])
def test_an_undated_reply_address_counts_as_issued_on_the_upgrade(
    staff_app: App, relay: Sink, clock: FrozenClock, days: int, acts: bool
) -> None:
    open_ticket(staff_app, relay)
    with staff_app.factory.begin() as session:
        upgraded = str(day_number(clock.now()))
        session.add(Setting(key=UNDATED_REPLY_DAY, value=upgraded))
    clock.advance(timedelta(days=days))
    outcome = reply(staff_app, _undated(staff_app, 1, ALICE), "#status waiting\n\nA photo?")
    assert ("relayed" in outcome.detail) is acts
    assert ticket_json(staff_app, 1)["status"] == ("waiting" if acts else "new")
    send(staff_app)
    renewals = [r for r in relay.to(ALICE) if EXPIRED_SUBJECT in r.message["Subject"]]
    assert len(renewals) == (0 if acts else 1)


def test_an_undated_reply_address_never_acts_where_none_was_given_out(
    staff_app: App, relay: Sink
) -> None:
    open_ticket(staff_app, relay)
    outcome = reply(staff_app, _undated(staff_app, 1, ALICE), "#status waiting\n\nA photo?")
    assert "kept internal" in outcome.detail
    assert ticket_json(staff_app, 1)["status"] == "new"
