"""Header values longer than the columns: the same outcome on SQLite and on PostgreSQL.

SQLite keeps a string of any length; PostgreSQL refuses one longer than its column. Each test
runs on both, so junk that SQLite would swallow cannot quarantine a real mail on PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import select

from mailsupport.app import App
from mailsupport.db.models import Contact, Inbound, InboundState, Message

from support import ingest, make_mail, ticket_json

LONG_ADDRESS = "x" * 400 + "@junk.test"
LONG_LOCAL_PART = "y" * 65 + "@junk.test"  # over RFC 5321's 64, kept all the same
LONG_DOMAIN = "zed@" + "d" * 252 + ".test"


def _contacts(app: App) -> list[str]:
    with app.factory() as session:
        return list(session.execute(select(Contact.email).order_by(Contact.email)).scalars())


def test_junk_copied_addresses_are_left_out_and_the_mail_is_processed(app: App) -> None:
    cc = ", ".join([LONG_ADDRESS, LONG_LOCAL_PART, "Ann <ann@customer.test>", LONG_DOMAIN])
    outcome = ingest(app, make_mail(to=f"support@example.com, {LONG_ADDRESS}", cc=cc))
    assert outcome.state is InboundState.PROCESSED, outcome.detail
    ticket = ticket_json(app, outcome.ticket_number)
    assert {(p["email"], p["role"]) for p in ticket["participants"]} == {
        ("carol@customer.test", "requester"),
        ("ann@customer.test", "cc"),
        (LONG_LOCAL_PART, "cc"),
    }
    with app.factory() as session:
        stored = session.execute(
            select(Message.to, Message.cc).where(Message.direction == "in")
        ).one()
    assert (stored.to, stored.cc) == (
        ["support@example.com"],
        [LONG_LOCAL_PART, "Ann <ann@customer.test>"],
    )
    assert _contacts(app) == ["ann@customer.test", "carol@customer.test", LONG_LOCAL_PART]


def test_a_sender_address_that_cannot_be_a_mailbox_quarantines_with_the_reason(
    app: App,
) -> None:
    outcome = ingest(app, make_mail(sender=f"Junk <{LONG_DOMAIN}>"))
    assert outcome.state is InboundState.QUARANTINED
    with app.factory() as session:
        reason = session.get_one(Inbound, outcome.inbound_id).quarantine_reason
    assert reason is not None
    assert reason.startswith("unusable: the sender's address 'zed@dddd")
    assert reason.endswith("is unusable: its domain is longer than 255 octets")
    assert _contacts(app) == []


def test_control_characters_in_a_display_name_are_dropped(app: App) -> None:
    raw = make_mail(sender="=?utf-8?q?Ca=00rol_=1BCustomer?= <carol@customer.test>")
    outcome = ingest(app, raw)
    assert outcome.state is InboundState.PROCESSED, outcome.detail
    ticket = ticket_json(app, outcome.ticket_number)
    assert ticket["messages"][0]["from_name"] == "Carol Customer"
    assert ticket["participants"][0]["name"] == "Carol Customer"


def test_over_long_subject_names_and_file_types_are_cut_to_their_columns(app: App) -> None:
    long_type = "application/x-" + "t" * 300
    raw = (
        f"From: {'Carol ' * 100}<carol@customer.test>\r\n"
        f"To: support@example.com\r\nCc: {'Ann ' * 100}<ann@customer.test>\r\n"
        f"Subject: {'printer ' * 250}\r\nMessage-ID: <names@customer.test>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        "--mix\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
        f"--mix\r\nContent-Type: {long_type}\r\n"
        f'Content-Disposition: attachment; filename="{"f" * 400}.pdf"\r\n\r\ndata\r\n'
        "--mix--\r\n"
    ).encode()
    outcome = ingest(app, raw)
    assert outcome.state is InboundState.PROCESSED, outcome.detail
    ticket = ticket_json(app, outcome.ticket_number)
    message = ticket["messages"][0]
    assert ticket["subject"] == ("printer " * 250)[:250]
    assert message["subject"] == ("printer " * 250).strip()  # a text column: kept whole
    assert message["from_name"] == ("Carol " * 100)[:200]
    assert {p["name"] for p in ticket["participants"]} == {
        ("Carol " * 100)[:200],
        ("Ann " * 100)[:200],
    }
    [attachment] = message["attachments"]
    assert attachment["filename"] == "f" * 196 + ".pdf"
    assert attachment["content_type"] == long_type[:255]


def _raw_mail(sender: str, subject: str, *headers: str) -> bytes:
    """A mail written line by line: the email package would fold or encode the long ids."""
    lines = [f"From: {sender}", "To: support@example.com", f"Subject: {subject}", *headers]
    return ("\r\n".join(lines) + f"\r\n\r\nHello, about {subject}.\r\n").encode()


def test_long_message_ids_are_kept_apart_and_replies_to_them_thread(app: App) -> None:
    # Both longer than the 998-character column, alike but for their last characters.
    first_id, second_id = ("m" * 1200 + f"{n}@customer.test" for n in (1, 2))
    first = ingest(app, _raw_mail("ann@customer.test", "Printer", f"Message-ID: <{first_id}>"))
    second = ingest(app, _raw_mail("bob@customer.test", "Scanner", f"Message-ID: <{second_id}>"))
    assert first.state is second.state is InboundState.PROCESSED, (first.detail, second.detail)
    assert first.ticket_number != second.ticket_number
    reply = ingest(
        app,
        _raw_mail(
            "bob@customer.test",
            "Re: my scanner",
            "Message-ID: <reply@customer.test>",
            f"In-Reply-To: <{second_id}>",
            f"References: <{first_id}> <{second_id}>",
        ),
    )
    assert reply.state is InboundState.PROCESSED, reply.detail
    assert reply.ticket_number == second.ticket_number
    with app.factory() as session:
        stored = list(
            session.execute(select(Message.message_id).where(Message.direction == "in")).scalars()
        )
    assert len(set(stored)) == 3
    assert all(len(message_id) <= 998 for message_id in stored)
    assert stored[0].startswith("m" * 900)


def test_a_nul_in_the_message_id_neither_stops_storing_nor_processing(app: App) -> None:
    raw = _raw_mail("ann@customer.test", "Printer", "Message-ID: <a\x00b@customer.test>")
    outcome = ingest(app, raw)
    assert outcome.state is InboundState.PROCESSED, outcome.detail
    with app.factory() as session:
        stored = session.get_one(Inbound, outcome.inbound_id).message_id
    assert stored == "ab@customer.test"
