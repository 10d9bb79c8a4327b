"""What the pipeline keeps of a message: decoded text, attachments, screening marks."""

from __future__ import annotations

import base64
import binascii
import hashlib
from email.message import EmailMessage

from sqlalchemy import func, select

from mailsupport.app import App
from mailsupport.db.models import Attachment, Blob, Inbound

from support import ingest, make_mail, ticket_json

HOSTILE_NAMES = [
    "../../etc/passwd",
    "..\\..\\windows\\system32\\evil.dll",
    "a\x00b.exe",
    "x" * 5000 + ".pdf",
    "/absolute/path.txt",
    "",
]


def _with_attachments(names: list[str]) -> tuple[bytes, list[bytes]]:
    msg = EmailMessage()
    msg["From"] = "carol@customer.test"
    msg["To"] = "support@example.com"
    msg["Subject"] = "files"
    msg["Message-ID"] = "<files@customer.test>"
    msg.set_content("see attached")
    contents = []
    for i, name in enumerate(names):
        data = bytes([i]) * (100 + i) + b"\x00\xff payload"
        contents.append(data)
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes(), contents


def test_attachments_are_kept_under_generated_ids(app: App) -> None:
    raw, contents = _with_attachments(HOSTILE_NAMES)
    outcome = ingest(app, raw)
    message = ticket_json(app, outcome.ticket_number)["messages"][0]
    attachments = message["attachments"]
    assert [a["size"] for a in attachments] == [len(c) for c in contents]
    for item in attachments:
        name = item["filename"]
        assert "/" not in name and "\\" not in name and "\x00" not in name
        assert ".." not in name
        assert 0 < len(name) <= 255
        assert item["content_type"] == "application/octet-stream"
        assert len(item["id"]) == 32 and item["id"] not in name
    assert attachments[3]["filename"].endswith(".pdf")
    with app.factory() as session:
        stored = {b.sha256: b.data for b in session.execute(select(Blob)).scalars()}
    for data in contents:
        assert stored[hashlib.sha256(data).hexdigest()] == data


def test_raw_8bit_filenames_are_kept_readable(app: App) -> None:
    """UTF-8 or cp1251 bytes written straight into Content-Disposition, as some clients do."""
    parts = [
        (b"text/plain; charset=utf-8", "Счёт №5 от 12.03.txt".encode()),
        (b"application/pdf", "Акт сверки.pdf".encode("cp1251")),
        (b"application/pdf", "../../Größe\x07.pdf".encode()),
    ]
    raw = (
        b"From: ivan@customer.test\r\nTo: support@example.com\r\nSubject: files\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mix"\r\n\r\n'
        b"--mix\r\nContent-Type: text/plain; charset=windows-1251\r\n\r\n"
        + "Документы во вложении.".encode("cp1251")
        + b"\r\n"
        + b"".join(
            b"--mix\r\nContent-Type: " + part_type + b"\r\n"
            b'Content-Disposition: attachment; filename="' + name + b'"\r\n\r\ndata\r\n'
            for part_type, name in parts
        )
        + b"--mix--\r\n"
    )
    outcome = ingest(app, raw)
    message = ticket_json(app, outcome.ticket_number)["messages"][0]
    assert message["text"].strip() == "Документы во вложении."
    assert [a["filename"] for a in message["attachments"]] == [
        "Счёт №5 от 12.03.txt",
        "Акт сверки.pdf",
        "Größe.pdf",
    ]


def test_the_same_content_is_stored_once(app: App) -> None:
    logo = bytes(range(256)) * 4
    for number in (1, 2):
        msg = EmailMessage()
        msg["From"] = "ann@customer.test"
        msg["To"] = "support@example.com"
        msg["Subject"] = f"files {number}"
        msg["Message-ID"] = f"<files{number}@customer.test>"
        msg.set_content("see attached")
        for name in ("logo.png", "logo-again.png"):
            msg.add_attachment(logo, maintype="image", subtype="png", filename=name)
        ingest(app, msg.as_bytes())
    with app.factory() as session:
        blobs = session.execute(select(func.count()).select_from(Blob)).scalar_one()
        files = session.execute(select(func.count()).select_from(Attachment)).scalar_one()
    assert (blobs, files) == (1, 4)


def _legacy_mail(charset: str, name: str, subject: str, text: str) -> bytes:
    """A mail as old Windows and Unix clients write it: 8-bit body, RFC 2047 headers."""
    b_name = base64.b64encode(name.encode(charset)).decode()
    q_subject = "".join(f"={byte:02X}" for byte in subject.encode(charset))
    head = (
        f"From: =?{charset}?B?{b_name}?= <ivan.{charset}@customer.test>\r\n"
        "To: support@example.com\r\n"
        f"Subject: =?{charset}?Q?{q_subject}?=\r\n"
        f"Message-ID: <{charset}@customer.test>\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode("ascii") + text.encode(charset) + b"\r\n"


def test_legacy_charsets_are_decoded(app: App) -> None:
    text = "Здравствуйте, принтер снова не печатает."
    for charset in ("cp1251", "koi8-r"):
        outcome = ingest(app, _legacy_mail(charset, "Иван Петров", "Принтер", text))
        data = ticket_json(app, outcome.ticket_number)
        assert data["subject"] == "Принтер"
        assert data["messages"][0]["text"].strip() == text
        assert data["messages"][0]["from_name"] == "Иван Петров"


def _eight_bit_mail(subject: str, body: bytes, content_type: str) -> bytes:
    head = (
        "From: ivan@customer.test\r\nTo: support@example.com\r\n"
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: {content_type}\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode("ascii") + body + b"\r\n"


def test_misspelled_and_missing_charsets_are_decoded(app: App) -> None:
    russian = "Здравствуйте! У нас не работает принтер на третьем этаже. Спасибо."
    ukrainian = "Доброго дня! Принтер на третьому поверсі не друкує."
    mails = [
        ("koi8r", russian.encode("koi8_r"), "text/plain; charset=koi8r", russian),
        ("koi8u", ukrainian.encode("koi8_u"), "text/plain; charset=KOI8U", ukrainian),
        ("none", russian.encode("cp1251"), "text/plain", russian),
    ]
    for subject, body, content_type, text in mails:
        outcome = ingest(app, _eight_bit_mail(subject, body, content_type))
        stored = ticket_json(app, outcome.ticket_number)["messages"][0]["text"]
        assert stored.strip() == text, subject


def test_html_only_mail_gets_a_text_rendering(app: App) -> None:
    msg = EmailMessage()
    msg["From"] = "carol@customer.test"
    msg["To"] = "support@example.com"
    msg["Subject"] = "html"
    msg.set_content(
        "<html><body><p>Hello <b>team</b>,</p><ul><li>one</li><li>two</li></ul>"
        "<script>alert(1)</script></body></html>",
        subtype="html",
    )
    outcome = ingest(app, msg.as_bytes())
    text = ticket_json(app, outcome.ticket_number)["messages"][0]["text"]
    assert "Hello team," in text
    assert "one" in text and "two" in text
    assert "<b>" not in text and "alert(1)" not in text


def test_a_stub_text_alternative_gives_the_ticket_the_html_content(app: App) -> None:
    # What a newsletter-style sender writes: the message is only in the HTML part.
    msg = EmailMessage()
    msg["From"] = "orders@customer.test"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Order 4711"
    msg.set_content("To view this message, please use an HTML capable email client.")
    msg.add_alternative(
        "<html><body><p>Order <b>4711</b> arrived damaged.</p><table>"
        "<tr><td>TN-2420</td><td>cracked housing</td></tr>"
        "<tr><td>DR-2400</td><td>missing seal</td></tr></table>"
        "<p>Please send replacements to Leeds.</p></body></html>",
        subtype="html",
    )
    outcome = ingest(app, msg.as_bytes())
    text = ticket_json(app, outcome.ticket_number)["messages"][0]["text"]
    assert "Order 4711 arrived damaged." in text
    assert "missing seal" in text and "replacements to Leeds" in text
    assert "HTML capable" not in text


def test_a_lotus_notes_uuencoded_attachment_is_kept_as_a_file(app: App) -> None:
    data = bytes(range(256)) * 40
    lines = "".join(binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45))
    raw = make_mail(
        sender="Hans Muster <hans@customer.test>",
        body=f"Hello,\nthe log is attached.\n\nbegin 644 printer log.bin\n{lines}`\nend\n",
    )
    outcome = ingest(app, raw)
    message = ticket_json(app, outcome.ticket_number)["messages"][0]
    assert message["text"].strip() == "Hello,\nthe log is attached."
    assert [(a["filename"], a["size"]) for a in message["attachments"]] == [
        ("printer log.bin", len(data))
    ]
    with app.factory() as session:
        assert session.get_one(Blob, hashlib.sha256(data).hexdigest()).data == data


def test_null_envelope_sender_marks_the_message(app: App) -> None:
    """The envelope's MAIL FROM:<> counts as the return path when screening."""
    from mailsupport.db.inbox import RawMail, store_one
    from mailsupport.pipeline.runner import Pipeline

    raw = make_mail(subject="Thanks for your mail", sender="someone@customer.test")
    with app.factory.begin() as session:
        stored = store_one(
            session, RawMail(raw, "smtp", "", ("support@example.com",)), app.clock.now()
        )
    Pipeline(app.factory, app.config, app.clock).process_one(stored.inbound_id)
    with app.factory() as session:
        row = session.get(Inbound, stored.inbound_id)
        assert row is not None
        assert row.no_auto_reply is True


def test_auto_reply_marks_are_stored(app: App) -> None:
    raw = make_mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"})
    outcome = ingest(app, raw)
    assert outcome.ticket_number is None  # an auto-reply matching no ticket opens none
    with app.factory() as session:
        row = session.get(Inbound, outcome.inbound_id)
        assert row is not None
        assert (row.kind, row.no_auto_reply) == ("auto_reply", True)
        assert row.screen_reasons
