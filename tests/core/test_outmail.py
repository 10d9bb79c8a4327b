from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

import pytest

from mailsupport.core.message import Address, Attachment
from mailsupport.core.outmail import (
    HeaderInjectionError,
    InvalidAddressError,
    OutgoingMail,
    build_message,
    new_message_id,
    one_line,
    recipients,
    validate_address,
)
from mailsupport.errors import MailsupportError

DATE = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
BASE = OutgoingMail(
    from_name="ACME Support",
    from_address="support@example.com",
    to=(Address("alice@example.org", "Alice Smith"),),
    subject="[ACME #12] Printer on floor 3 is jammed",
    text="Hello,\nwe got your mail.\n",
    message_id="k3j9x@example.com",
    date=DATE,
)
INJECTIONS = [
    "x\r\nBcc: victim@evil.test",
    "x\nContent-Type: text/html",
    "x\rBcc: victim@evil.test",
    "x\x00Bcc: victim@evil.test",
    "x\u2028Bcc: victim@evil.test",
    "x\x85Bcc: victim@evil.test",
    "x\x0bBcc: victim@evil.test",
    "x\r\n\r\n<html>a second body</html>",
    "x\r\n Bcc: continued@evil.test",
]


def mail(**changes: Any) -> OutgoingMail:
    return replace(BASE, **changes)


def parse(raw: bytes) -> EmailMessage:
    """The message as a client reads it, after delivery turned CRLF into local newlines."""
    parsed = message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def raw_headers(raw: bytes) -> list[tuple[str, str]]:
    """Top-level header fields exactly as on the wire, unfolded."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("ascii")
    unfolded = re.sub(r"\r\n(?=[ \t])", "", head)
    return [(n, v.strip()) for n, v in (line.split(":", 1) for line in unfolded.split("\r\n"))]


def header_names(raw: bytes) -> list[str]:
    return [name.lower() for name, _ in raw_headers(raw)]


def header(raw: bytes, name: str) -> str:
    values = [v for n, v in raw_headers(raw) if n.lower() == name.lower()]
    assert len(values) == 1, (name, values)
    return values[0]


def decoded(value: str) -> str:
    """RFC 2047 decoding as mail clients do it: whitespace between encoded words is dropped.

    The modern parser of Python 3.11 keeps that whitespace inside display names, so names are
    checked with the older functions, which follow the RFC.
    """
    return str(make_header(decode_header(value)))


def decoded_mailboxes(raw: bytes, name: str) -> list[tuple[str, str]]:
    return [(decoded(n), a) for n, a in getaddresses([header(raw, name)])]


def lines(raw: bytes) -> list[bytes]:
    return raw.split(b"\r\n")


# --- headers ------------------------------------------------------------------------------


def test_headers_of_a_plain_acknowledgement() -> None:
    raw = build_message(mail(cc=(Address("bob@example.org"),)))
    parsed = parse(raw)
    assert header(raw, "From") == '"ACME Support" <support@example.com>'
    assert header(raw, "To") == '"Alice Smith" <alice@example.org>'
    assert header(raw, "Cc") == "bob@example.org"
    assert parsed["Subject"] == "[ACME #12] Printer on floor 3 is jammed"
    assert parsedate_to_datetime(header(raw, "Date")) == DATE
    assert header(raw, "Message-ID") == "<k3j9x@example.com>"
    assert header(raw, "MIME-Version") == "1.0"
    assert header(raw, "Auto-Submitted") == "auto-replied"
    assert header(raw, "X-Auto-Response-Suppress") == "OOF, AutoReply"
    assert "precedence" not in header_names(raw)
    assert "reply-to" not in header_names(raw)
    assert "in-reply-to" not in header_names(raw)
    assert "references" not in header_names(raw)
    assert parsed.get_content_type() == "text/plain"
    assert parsed.get_content_charset() == "utf-8"
    assert parsed["Content-Transfer-Encoding"] == "7bit"
    assert parsed.get_content() == "Hello,\nwe got your mail.\n"


def test_every_line_ends_in_crlf_and_stays_within_78_characters() -> None:
    raw = build_message(
        mail(
            subject="Принтер " * 40,
            to=tuple(Address(f"user{i}@example.org", f"Пользователь номер {i}") for i in range(9)),
            references=tuple(f"{i}.{'x' * 40}@example.net" for i in range(30)),
            text="Строка " * 300 + "\n" + "a" * 500,
        )
    )
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in lines(raw)) <= 78
    assert raw.isascii()


def test_reply_to_and_date_offset() -> None:
    moscow = timezone(timedelta(hours=3))
    raw = build_message(
        mail(
            reply_to=Address("support+12-k3j9x@example.com", "ACME Support"),
            date=datetime(2030, 1, 2, 6, 4, 5, tzinfo=moscow),
        )
    )
    assert header(raw, "Reply-To") == '"ACME Support" <support+12-k3j9x@example.com>'
    assert header(raw, "Date").endswith("+0300")
    assert parsedate_to_datetime(header(raw, "Date")) == DATE


def test_operator_reply_is_not_marked_automatic() -> None:
    raw = build_message(mail(auto_submitted=None, from_name="Alice via ACME Support"))
    assert "auto-submitted" not in header_names(raw)
    assert "x-auto-response-suppress" not in header_names(raw)
    assert header(raw, "From") == '"Alice via ACME Support" <support@example.com>'


def test_auto_generated_notice() -> None:
    raw = build_message(mail(auto_submitted="auto-generated"))
    assert header(raw, "Auto-Submitted") == "auto-generated"


# --- threading ----------------------------------------------------------------------------


def test_threading_headers() -> None:
    raw = build_message(mail(in_reply_to="parent@mail.example.org", references=("root@a", "mid@b")))
    assert header(raw, "In-Reply-To") == "<parent@mail.example.org>"
    assert header(raw, "References") == "<root@a> <mid@b> <parent@mail.example.org>"


def test_parent_already_in_references_is_not_repeated() -> None:
    raw = build_message(mail(in_reply_to="mid@b", references=("root@a", "mid@b", "root@a")))
    assert header(raw, "References") == "<root@a> <mid@b>"


def test_references_keep_the_root_and_the_latest() -> None:
    ids = tuple(f"m{i}@example.net" for i in range(50))
    raw = build_message(mail(in_reply_to="m49@example.net", references=ids[:-1]))
    kept = re.findall(r"<([^>]+)>", header(raw, "References"))
    assert len(kept) == 20
    assert kept[0] == "m0@example.net"
    assert kept[1:] == list(ids[-19:])


def test_long_foreign_message_ids_are_echoed_unchanged() -> None:
    long_id = "DM6PR11MB4691A5B6E8E5C1A5B6E8E5C1A5B6E8E5C1A5B6" * 3 + "@namprd11.prod.outlook.com"
    raw = build_message(mail(in_reply_to=long_id, references=(long_id,)))
    assert header(raw, "In-Reply-To") == f"<{long_id}>"
    assert header(raw, "References") == f"<{long_id}>"
    assert "=?" not in raw.decode("ascii")


@pytest.mark.parametrize(
    "bad_id",
    [
        "a b@example.com",
        "a@example.com>\r\nBcc: victim@evil.test",
        "<a@example.com><b@example.com>",
        "ид@пример.рф",
        "",
        "x" * 1000,
    ],
)
def test_unusable_foreign_ids_are_dropped(bad_id: str) -> None:
    raw = build_message(mail(in_reply_to=bad_id, references=("root@a", bad_id)))
    assert "in-reply-to" not in header_names(raw)
    assert header(raw, "References") == "<root@a>"
    assert "bcc" not in header_names(raw)


def test_brackets_around_ids_are_tolerated() -> None:
    raw = build_message(mail(in_reply_to="<p@a>", references=("<r@a>",)))
    assert header(raw, "In-Reply-To") == "<p@a>"
    assert header(raw, "References") == "<r@a> <p@a>"


# --- non-ASCII and long values ---------------------------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [
        "[ACME #12] Принтер на третьем этаже зажевал бумагу",
        "Ответ: [ACME #1042] 打印机卡纸了 😀 ünïcödé",
        "Иван Петров-Водкин, старший вице-президент по всем важным вопросам компании",
        'Quotes "like this", a backslash \\ and =?utf-8?q?not-an-encoded-word?=',
    ],
)
def test_non_ascii_subject_round_trips(subject: str) -> None:
    raw = build_message(mail(subject=subject))
    assert decoded(header(raw, "Subject")) == subject
    assert parse(raw)["Subject"] == subject
    assert max(len(line) for line in lines(raw)) <= 78


@pytest.mark.parametrize(
    "name",
    [
        "Иван Петров",
        "Александра Константиновна Петрова-Водкина, руководитель отдела закупок",
        "Служба поддержки ACME",
        'Smith, John "Jack" [ACME]',
        "José Müller-Lüdenscheidt",
        "x" * 200,
        "=?utf-8?q?Spoofed?=",
    ],
)
def test_display_names_round_trip_as_one_mailbox(name: str) -> None:
    raw = build_message(
        mail(
            from_name=name,
            to=(Address("alice@example.org", name), Address("bob@example.org", "Bob")),
            cc=(Address("carol@example.org", name),),
        )
    )
    assert decoded_mailboxes(raw, "From") == [(name, "support@example.com")]
    assert decoded_mailboxes(raw, "To") == [(name, "alice@example.org"), ("Bob", "bob@example.org")]
    assert decoded_mailboxes(raw, "Cc") == [(name, "carol@example.org")]
    assert len(parse(raw)["To"].addresses) == 2
    assert max(len(line) for line in lines(raw)) <= 78


@pytest.mark.parametrize(
    "subject",
    [
        " ".join(["word"] * 400),
        "w" * 2000,
        "ж" * 2000,
        "Принтер " * 250,
        "a" * 77 + " " + "b" * 70,
    ],
)
def test_overlong_subjects_are_folded_and_decode_back(subject: str) -> None:
    raw = build_message(mail(subject=subject))
    assert max(len(line) for line in lines(raw)) <= 78
    expected = subject.strip()
    assert decoded(re.sub(r"\r\n(?=[ \t])", "", header(raw, "Subject"))) == expected
    assert parse(raw)["Subject"] == expected


def test_overlong_display_names_are_shortened() -> None:
    raw = build_message(mail(to=(Address("alice@example.org", "Имя " * 500),)))
    ((name, address),) = decoded_mailboxes(raw, "To")
    assert address == "alice@example.org"
    assert 200 < len(name) <= 256


# --- header injection ---------------------------------------------------------------------

EXPECTED_HEADERS = [
    "date",
    "from",
    "to",
    "cc",
    "subject",
    "message-id",
    "in-reply-to",
    "references",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-mailsupport-ticket",
    "mime-version",
    "content-type",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_attempts_never_add_a_header(payload: str) -> None:
    raw = build_message(
        mail(
            from_name=payload,
            to=(Address("alice@example.org", payload),),
            cc=(Address("bob@example.org", payload),),
            subject=payload,
            in_reply_to="parent@example.org",
            references=(payload, "root@example.org"),
            extra_headers=(("X-Mailsupport-Ticket", payload),),
            attachments=(Attachment(payload, "text/plain", b"data"),),
            text="body\n",
        )
    )
    assert header_names(raw) == EXPECTED_HEADERS
    parsed = parse(raw)
    assert parsed.get_content_type() == "multipart/mixed"
    assert "bcc" not in {name.lower() for name in parsed}
    assert not any(p.get_content_type() == "text/html" for p in parsed.walk())
    body, attachment = parsed.iter_parts()
    assert body.get_content() == "body\n"
    assert attachment.get_filename() == one_line(payload)
    for name in ("Subject", "X-Mailsupport-Ticket"):
        value = decoded(re.sub(r"\r\n(?=[ \t])", "", header(raw, name)))
        assert value == one_line(payload)
        assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", value)
    for mailbox_header in ("From", "To", "Cc"):
        assert len(decoded_mailboxes(raw, mailbox_header)) == 1


def test_one_line() -> None:
    assert one_line("  a\r\n\tb\u2028\u2029c\x00d\x85e  ") == "a b c d e"
    assert one_line("Иван\u00a0Петров") == "Иван\u00a0Петров"
    assert one_line("\ud800x") == "x"


# --- addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "alice",
        "@example.com",
        "alice@",
        "a b@example.com",
        " alice@example.com",
        "alice@exa mple.com",
        '"alice"@example.com',
        "<alice@example.com>",
        "Alice <alice@example.com>",
        "alice@example.com\r\nBcc: victim@evil.test",
        "alice@example.com\n",
        "алиса@example.com",
        "alice@@example.com",
        "alice@example..com",
        "alice@-example.com",
        "alice@example.com.",
        ".alice@example.com",
        "al..ice@example.com",
        "alice.@example.com",
        "alice@exa_mple.com",
        "alice@[192.0.2.1]",
        "a" * 65 + "@example.com",
        "alice@" + "a" * 64 + ".com",
        "alice@" + ".".join(["abcdefghi"] * 26) + ".com",
        "alice\x00@example.com",
    ],
)
def test_invalid_addresses_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddressError):
        validate_address(address)
    with pytest.raises(ValueError):
        build_message(mail(to=(Address(address),)))


@pytest.mark.parametrize(
    ("address", "wire"),
    [
        ("alice@example.org", "alice@example.org"),
        ("Alice.Smith+tag@Example.ORG", "Alice.Smith+tag@example.org"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("root@localhost", "root@localhost"),
        ("ivan@пример.рф", "ivan@xn--e1afmkfd.xn--p1ai"),
    ],
)
def test_valid_addresses(address: str, wire: str) -> None:
    assert validate_address(address) == wire


def test_idn_recipient_is_sent_in_ascii_form() -> None:
    raw = build_message(mail(to=(Address("ivan@пример.рф", "Иван"),)))
    assert decoded_mailboxes(raw, "To") == [("Иван", "ivan@xn--e1afmkfd.xn--p1ai")]


def test_invalid_own_addresses_are_refused_too() -> None:
    with pytest.raises(InvalidAddressError):
        build_message(mail(from_address="support at example.com"))
    with pytest.raises(InvalidAddressError):
        build_message(mail(reply_to=Address("reply\r\n@example.com")))


def test_recipients_are_to_then_cc_once_each() -> None:
    both = mail(
        to=(Address("a@example.org"), Address("b@example.org")),
        cc=(Address("b@example.org"), Address("c@пример.рф")),
    )
    assert recipients(both) == ("a@example.org", "b@example.org", "c@xn--e1afmkfd.xn--p1ai")


# --- programming errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"to": ()},
        {"date": None},
        {"date": datetime(2030, 1, 2, 3, 4, 5)},  # naive
        {"message_id": ""},
        {"message_id": "no-domain"},
        {"message_id": "a b@example.com"},
        {"auto_submitted": "no"},
        {"extra_headers": (("Bcc", "victim@evil.test"),)},
        {"extra_headers": (("List-Id", "x"),)},
        {"extra_headers": (("X-Mailsupport-Ticket\r\nBcc", "x"),)},
    ],
)
def test_programming_errors_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(HeaderInjectionError) as raised:
        build_message(mail(**changes))
    assert isinstance(raised.value, MailsupportError)


def test_allowed_extra_headers_get_their_usual_spelling() -> None:
    raw = build_message(
        mail(extra_headers=(("x-mailsupport-ticket", "12"), ("X-LOOP", "support@example.com")))
    )
    assert header(raw, "X-Mailsupport-Ticket") == "12"
    assert header(raw, "X-Loop") == "support@example.com"
    assert "X-Mailsupport-Ticket: 12" in raw.decode("ascii")


# --- message ids ----------------------------------------------------------------------------


def test_new_message_ids_are_unique_and_well_formed() -> None:
    ids = {new_message_id("example.com") for _ in range(2000)}
    assert len(ids) == 2000
    for message_id in ids:
        assert re.fullmatch(r"[a-z2-7]{32}@example\.com", message_id)


def test_new_message_id_domain() -> None:
    assert new_message_id("Mail.Example.COM").endswith("@mail.example.com")
    assert new_message_id("пример.рф").endswith("@xn--e1afmkfd.xn--p1ai")
    with pytest.raises(InvalidAddressError):
        new_message_id("example.com>\r\nBcc: x")
    with pytest.raises(InvalidAddressError):
        new_message_id("")


def test_a_new_message_id_is_accepted_by_build_message() -> None:
    message_id = new_message_id("example.com")
    raw = build_message(mail(message_id=message_id))
    assert header(raw, "Message-ID") == f"<{message_id}>"


# --- bodies and attachments -----------------------------------------------------------------


def test_non_ascii_text_is_quoted_printable_and_round_trips() -> None:
    text = "Здравствуйте!\n\nВаша заявка ACME #12 принята. " * 5 + "\n"
    raw = build_message(mail(text=text))
    parsed = parse(raw)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_content() == text
    assert max(len(line) for line in lines(raw)) <= 78


def test_text_line_endings_are_normalised() -> None:
    parsed = parse(build_message(mail(text="one\r\ntwo\rthree\nfour")))
    assert parsed.get_content() == "one\ntwo\nthree\nfour\n"


def test_lone_surrogates_do_not_break_the_body() -> None:
    parsed = parse(build_message(mail(text="bad \udce9 byte", subject="bad \udce9 byte")))
    assert parsed.get_content() == "bad \ufffd byte\n"
    assert parsed["Subject"] == "bad byte"


def test_html_alternative() -> None:
    html = "<p>Hello &lt;script&gt; Привет</p>\n"
    parsed = parse(build_message(mail(html=html)))
    assert parsed.get_content_type() == "multipart/alternative"
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    assert html_part.get_content() == html
    assert "mime-version" not in {name.lower() for name in html_part}


def test_html_and_attachments() -> None:
    parsed = parse(
        build_message(
            mail(html="<p>hi</p>", attachments=(Attachment("log.txt", "text/plain", b"ok\n"),))
        )
    )
    assert parsed.get_content_type() == "multipart/mixed"
    alternative, attachment = parsed.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain", "text/html"]
    assert attachment.get_filename() == "log.txt"
    assert attachment.get_content() == "ok\n"


@pytest.mark.parametrize(
    "filename",
    [
        'report"; name="evil.exe',
        "отчёт за квартал «итог».pdf",
        "résumé " * 30 + ".docx",
        "back\\slash 'quoted' (1).txt",
        "x" * 300 + ".log",
        "文件.zip",
    ],
)
def test_attachment_file_names_round_trip(filename: str) -> None:
    attachment = Attachment(filename, "application/octet-stream", bytes(range(256)))
    raw = build_message(mail(attachments=(attachment,)))
    parsed = parse(raw)
    (part,) = parsed.iter_attachments()
    assert part.get_filename() == one_line(filename)
    assert part.get_content() == bytes(range(256))
    assert part["Content-Disposition"].params["filename"] == one_line(filename)
    assert len(part["Content-Disposition"].params) == 1
    assert max(len(line) for line in lines(raw)) <= 78


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/pdf", "application/pdf"),
        ("IMAGE/PNG", "image/png"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("message/rfc822", "application/octet-stream"),
        ("multipart/mixed", "application/octet-stream"),
        ("nonsense", "application/octet-stream"),
        ("text/plain\r\nBcc: victim@evil.test", "application/octet-stream"),
    ],
)
def test_attachment_content_types(content_type: str, expected: str) -> None:
    raw = build_message(mail(attachments=(Attachment("f", content_type, b"data"),)))
    (part,) = parse(raw).iter_attachments()
    assert part.get_content_type() == expected
    assert "bcc" not in header_names(raw)


def test_empty_attachment_name_gets_a_placeholder() -> None:
    raw = build_message(mail(attachments=(Attachment("\r\n", "image/png", b"\x89PNG"),)))
    (part,) = parse(raw).iter_attachments()
    assert part.get_filename() == "attachment"


def _as_the_email_package_writes_it(mail: OutgoingMail) -> bytes:
    """The reference a lone text part must match: the email package's own set_content."""
    from email.message import MIMEPart

    from mailsupport.core import outmail

    message = MIMEPart(policy=outmail._POLICY)
    for name, value in outmail._headers(mail):
        message[name] = value
    message["MIME-Version"] = "1.0"
    text = outmail._body_text(mail.text)
    message.set_content(
        text, subtype="plain", charset="utf-8", cte=outmail._transfer_encoding(text)
    )
    return message.as_bytes()


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"text": "A line of exactly seventy-eight characters is still seven bit, like this.xx\n"},
        {"text": "x" * 200 + "\nand a long line before it\n"},
        {"text": "Здравствуйте!\nВаша заявка принята.\n"},
        {"text": "windows\r\nold mac\runix\nno final newline"},
        {"text": "= signs = and trailing spaces   \nand tabs\t\n.\n.leading dot\n"},
        {"text": ""},
        {"subject": "Принтер не печатает — срочно " * 4, "from_name": "Служба поддержки"},
        {
            "cc": (Address("bob@example.org", "Bob, Jr."), Address("eve@example.org")),
            "reply_to": Address("support+12@example.com"),
            "in_reply_to": "parent@example.org",
            "references": ("root@example.org", "parent@example.org"),
            "extra_headers": (("X-Mailsupport-Ticket", "12"), ("X-Loop", "support@example.com")),
            "auto_submitted": None,
        },
    ],
)
def test_a_lone_text_part_is_written_as_the_email_package_writes_it(
    changes: dict[str, Any],
) -> None:
    one = mail(**changes)
    assert build_message(one) == _as_the_email_package_writes_it(one)
