"""Finding the customer's original in an operator's forward, attached or inline."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mailsupport.core.forward import (
    Forwarded,
    find_forwarded,
    parse_forwarded_date,
    parse_sender,
)
from mailsupport.core.message import Address
from mailsupport.core.parse import parse_message

JANE = Address("jane@customer.example", "Jane Customer")
BODY = "Hi,\nthe printer on floor 3 is jammed.\n\nJane"
# The forwarding client's local time is UTC+2; inline dates are written in it.
FORWARD_DATE = "Tue, 3 Apr 2012 10:00:00 +0200"
ORIGINAL_TIME = datetime(2012, 4, 2, 15, 49, tzinfo=UTC)


def operator_mail(body: str, subject: str = "Fwd: Printer jammed") -> bytes:
    message = EmailMessage()
    message["From"] = "Bob Operator <bob@example.com>"
    message["To"] = "support@example.com"
    message["Subject"] = subject
    message["Date"] = FORWARD_DATE
    message["Message-ID"] = "<fwd-1@example.com>"
    message.set_content(body)
    return message.as_bytes()


def forwarded_inline(body: str, subject: str = "Fwd: Printer jammed") -> Forwarded | None:
    raw = operator_mail(body, subject)
    return find_forwarded(parse_message(raw), raw)


INLINE = {
    "gmail": (
        "FYI, see below.\n\n---------- Forwarded message ---------\n"
        "From: Jane Customer <jane@customer.example>\nDate: Mon, Apr 2, 2012 at 5:49 PM\n"
        f"Subject: Printer jammed\nTo: <bob@example.com>\n\n\n{BODY}\n"
    ),
    "outlook original message": (
        "FYI, see below.\n\n-----Original Message-----\n"
        "From: Jane Customer [mailto:jane@customer.example]\n"
        "Sent: Monday, April 2, 2012 5:49 PM\nTo: Bob\nSubject: Printer jammed\n\n"
        f"{BODY}\n"
    ),
    "outlook rule": (
        "FYI, see below.\n\n________________________________\n"
        "From: Jane Customer <jane@customer.example>\nSent: Monday, April 2, 2012 5:49 PM\n"
        f"To: Bob <bob@example.com>\nSubject: Printer jammed\n\n{BODY}\n"
    ),
    "thunderbird": (
        "FYI, see below.\n\n-------- Forwarded Message --------\nSubject: \tPrinter jammed\n"
        "Date: \tMon, 2 Apr 2012 17:49:00 +0200\n"
        "From: \tJane Customer <jane@customer.example>\nTo: \tbob@example.com\n\n"
        f"{BODY}\n"
    ),
    "apple mail": (
        "FYI, see below.\n\nBegin forwarded message:\n\n"
        "> From: Jane Customer <jane@customer.example>\n> Subject: Printer jammed\n"
        "> Date: 2 April 2012 at 17:49:00 CEST\n> To: bob@example.com\n> \n"
        + "".join(f"> {line}\n" for line in BODY.split("\n"))
    ),
    "mail.ru": (
        "FYI, see below.\n\n-------- Пересылаемое сообщение --------\n"
        "От кого: Jane Customer <jane@customer.example>\nКому: bob@example.com\n"
        "Дата: Понедельник, 2 апреля 2012, 17:49 +02:00\nТема: Printer jammed\n\n"
        f"{BODY}\n"
    ),
    "yandex": (
        "FYI, see below.\n\n-------- Пересылаемое сообщение --------\n"
        f'02.04.2012, 17:49, "Jane Customer" <jane@customer.example>:\n\n{BODY}\n\n'
        "-------- Конец пересылаемого сообщения --------\n"
    ),
    "german": (
        "FYI, see below.\n\n---------- Weitergeleitete Nachricht ----------\n"
        "Von: Jane Customer <jane@customer.example>\nDatum: Mo., 2. Apr. 2012 um 17:49 Uhr\n"
        f"Betreff: Printer jammed\nAn: <bob@example.com>\n\n{BODY}\n"
    ),
}


@pytest.mark.parametrize("style", list(INLINE))
def test_inline_forward(style: str) -> None:
    forwarded = forwarded_inline(INLINE[style])
    assert forwarded is not None
    assert forwarded.sender == JANE
    assert forwarded.subject == "Printer jammed"
    assert forwarded.text == BODY
    assert forwarded.note == "FYI, see below."
    assert forwarded.message_id == ""
    assert forwarded.date == ORIGINAL_TIME


def test_forward_without_note() -> None:
    forwarded = forwarded_inline(INLINE["gmail"].replace("FYI, see below.\n\n", ""))
    assert forwarded is not None
    assert forwarded.note == ""
    assert forwarded.sender == JANE


def test_attached_original() -> None:
    original = EmailMessage()
    original["From"] = '"Customer, Jane" <Jane@Customer.example>'
    original["To"] = "bob@example.com"
    original["Subject"] = "Printer jammed"
    original["Date"] = "Mon, 2 Apr 2012 17:49:00 +0200"
    original["Message-ID"] = "<original-1@customer.example>"
    original.set_content(BODY)
    forward = EmailMessage()
    forward["From"] = "Bob Operator <bob@example.com>"
    forward["To"] = "support@example.com"
    forward["Subject"] = "Fwd: Printer jammed"
    forward.set_content("Please take this one.")
    forward.add_attachment(original)
    raw = forward.as_bytes()

    forwarded = find_forwarded(parse_message(raw), raw)

    assert forwarded is not None
    assert forwarded.sender == Address("jane@customer.example", "Customer, Jane")
    assert forwarded.subject == "Printer jammed"
    assert forwarded.text == BODY
    assert forwarded.message_id == "original-1@customer.example"
    assert forwarded.date == ORIGINAL_TIME
    assert forwarded.note == "Please take this one."


def test_not_a_forward_despite_the_subject() -> None:
    assert forwarded_inline("Please look at the printer on floor 3.\n\nBob") is None


def test_reply_is_not_a_forward() -> None:
    body = (
        "Done.\n\nOn Mon, Apr 2, 2012 at 5:49 PM Jane Customer <jane@customer.example> wrote:\n"
        "> Hi,\n> the printer is jammed.\n> more\n> and more\n"
    )
    assert forwarded_inline(body, "Re: Printer jammed") is None


def test_forward_naming_no_address_is_refused() -> None:
    body = (
        "FYI\n\n________________________________\nFrom: Jane Customer\n"
        f"Sent: Monday, April 2, 2012 5:49 PM\nTo: Bob\nSubject: Printer jammed\n\n{BODY}\n"
    )
    assert forwarded_inline(body) is None


def test_forward_naming_an_impossible_address_is_refused() -> None:
    # Opening a ticket for it would fail: no mailbox has a 321-character address.
    body = (
        "FYI\n\n________________________________\n"
        f"From: Jane Customer <{'j' * 321}@customer.example>\n"
        f"Sent: Monday, April 2, 2012 5:49 PM\nTo: Bob\nSubject: Printer jammed\n\n{BODY}\n"
    )
    assert forwarded_inline(body) is None


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("Jane Customer <jane@customer.example>", JANE),
        ("Jane Customer [mailto:jane@customer.example]", JANE),
        ("Jane Customer <mailto:jane@customer.example>", JANE),
        ('"Jane Customer" <JANE@customer.example>', JANE),
        ("jane@customer.example", Address("jane@customer.example")),
        ("<jane@customer.example>", Address("jane@customer.example")),
        ("jane@customer.example <jane@customer.example>", Address("jane@customer.example")),
        ("Jane Customer", Address("", "Jane Customer")),
    ],
)
def test_sender_forms(line: str, address: Address) -> None:
    assert parse_sender(line) == address


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Mon, 2 Apr 2012 17:49:00 +0200", ORIGINAL_TIME),
        ("Mon, Apr 2, 2012 at 5:49\u202fPM", ORIGINAL_TIME),
        ("Monday, April 2, 2012 5:49 PM", ORIGINAL_TIME),
        ("Monday, April 2, 2012 3:49 PM +00:00", ORIGINAL_TIME),
        ("2 April 2012 at 17:49:00 CEST", ORIGINAL_TIME),
        ("April 2, 2012 at 5:49:00 PM GMT+2", ORIGINAL_TIME),
        ("Понедельник, 2 апреля 2012, 18:49 +03:00", ORIGINAL_TIME),
        ("2 апр. 2012 г. в 17:49", ORIGINAL_TIME),
        ("Mo., 2. Apr. 2012 um 17:49 Uhr", ORIGINAL_TIME),
        ("02.04.2012, 17:49", ORIGINAL_TIME),
        ("2012-04-02 17:49", ORIGINAL_TIME),
        ("yesterday", None),
        ("", None),
        ("31 Feb 2012 at 10:00", None),
    ],
)
def test_dates(line: str, expected: datetime | None) -> None:
    assert parse_forwarded_date(line, FORWARD_DATE) == expected


def test_zone_less_date_without_a_forwarding_date_is_unknown() -> None:
    assert parse_forwarded_date("Monday, April 2, 2012 5:49 PM", None) is None
    assert parse_forwarded_date("Monday, April 2, 2012 5:49 PM", "garbage") is None
