"""parse_message on hand-written mail covering each tolerance the parser promises."""

from __future__ import annotations

import base64
import binascii
import contextlib
import random
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from mailsupport.core.message import Address, ParsedMessage
from mailsupport.core.parse import (
    MAX_FILENAME,
    _set_aside_base64_bodies,
    message_ids,
    parse_message,
    safe_filename,
)
from mailsupport.errors import MessageParseError

RUSSIAN = "Здравствуйте! Принтер на третьем этаже не печатает."
JAPANESE = "お世話になっております。プリンターが動きません。"
CHINESE = "您好，三楼的打印机无法打印。"
CHINESE_TRADITIONAL = "您好，三樓的印表機無法列印。"
KOREAN = "안녕하세요. 3층 프린터가 작동하지 않습니다."
HEBREW = "שלום, המדפסת לא עובדת."


def mail(*headers: str | bytes, body: str | bytes = "Hello\n") -> bytes:
    """A raw message: header lines as given, a blank line, then the body."""
    lines = [h if isinstance(h, bytes) else h.encode() for h in headers]
    payload = body if isinstance(body, bytes) else body.encode()
    return b"\n".join(lines) + b"\n\n" + payload


def encoded_word(text: str, label: str, encoding: str) -> str:
    return f"=?{label}?B?{base64.b64encode(text.encode(encoding)).decode()}?="


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\n\ndeep down\n"
    for level in range(depth):
        boundary = b"b%d" % level
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"\n\n--'
            + boundary
            + b"\n"
            + body
            + b"\n--"
            + boundary
            + b"--\n"
        )
    return b"From: a@example.com\nSubject: deep\nMIME-Version: 1.0\n" + body


def test_ordinary_mail() -> None:
    parsed = parse_message(
        mail(
            "Return-Path: <Carol@Customer.TEST>",
            "From: Carol Customer <Carol@Customer.TEST>",
            "To: support@example.com, Bob <BOB@example.com>",
            "Cc: dave@example.org",
            "Reply-To: carol.private@customer.test",
            "Subject: Printer   on floor 3\n\tis jammed",
            "Message-ID: < 1234@mail.customer.test >",
            "Date: Mon, 2 Mar 2026 10:00:00 +0100",
            body="Please help.\n",
        )
    )
    assert parsed.from_ == Address("carol@customer.test", "Carol Customer")
    assert parsed.to == (Address("support@example.com"), Address("bob@example.com", "Bob"))
    assert parsed.cc == (Address("dave@example.org"),)
    assert parsed.reply_to == (Address("carol.private@customer.test"),)
    assert parsed.subject == "Printer on floor 3 is jammed"
    assert parsed.message_id == "1234@mail.customer.test"
    assert parsed.date == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert parsed.text == "Please help.\n"
    assert parsed.html == ""
    assert parsed.attachments == ()
    assert parsed.return_path == "carol@customer.test"
    assert [name for name, _ in parsed.headers][:3] == ["Return-Path", "From", "To"]


@pytest.mark.parametrize("transfer", ["8bit", "quoted-printable", "base64"])
@pytest.mark.parametrize(
    ("label", "text", "encoding"),
    [
        ("windows-1251", RUSSIAN, "cp1251"),
        ("koi8-r", RUSSIAN, "koi8_r"),
        ("x-mac-cyrillic", RUSSIAN, "mac_cyrillic"),
        ("iso-2022-jp", JAPANESE, "iso2022_jp"),
        ("shift_jis", JAPANESE, "shift_jis"),
        ("big5", CHINESE_TRADITIONAL, "big5"),
        ("gb2312", CHINESE, "gb2312"),
        ("euc-kr", KOREAN, "euc_kr"),
        ("ks_c_5601-1987", KOREAN, "cp949"),
        ("iso-8859-8-i", HEBREW, "iso8859_8"),
        ("utf8", RUSSIAN, "utf-8"),
        ("unicode-1-1-utf-7", RUSSIAN, "utf-7"),
        ("windows-1250", "Dzień dobry, drukarka nie działa.", "cp1250"),
    ],
)
def test_legacy_charsets_in_body_and_subject(
    label: str, text: str, encoding: str, transfer: str
) -> None:
    data = text.encode(encoding)
    if transfer == "base64":
        body = base64.encodebytes(data)
    elif transfer == "quoted-printable":
        body = b"".join(
            b"=%02X" % byte if byte > 126 or byte == 61 else bytes([byte]) for byte in data
        )
    else:
        body = data
    parsed = parse_message(
        mail(
            "From: someone@example.com",
            f"Subject: {encoded_word(text, label, encoding)}",
            "MIME-Version: 1.0",
            f'Content-Type: text/plain; charset="{label}"',
            f"Content-Transfer-Encoding: {transfer}",
            body=body,
        )
    )
    assert parsed.subject == text
    assert parsed.text == text


def test_raw_8bit_headers_are_decoded() -> None:
    parsed = parse_message(
        mail(
            b"From: " + "Иван Петров".encode("cp1251") + b" <Ivan@Example.RU>",
            b"Subject: " + "Счёт на оплату".encode("cp1251"),
            b"X-Note: " + "Grüße".encode(),
            "Content-Type: text/plain; charset=windows-1251",
            "Content-Transfer-Encoding: 8bit",
            body=RUSSIAN.encode("cp1251"),
        )
    )
    assert parsed.from_ == Address("ivan@example.ru", "Иван Петров")
    assert parsed.subject == "Счёт на оплату"
    assert parsed.header("x-note") == "Grüße"
    assert parsed.text == RUSSIAN


@pytest.mark.parametrize(
    ("subject", "encoding"), [("回复：打印机问题", "gb2312"), ("プリンターが動きません", "shift_jis")]
)
def test_raw_cjk_subject_in_a_mail_whose_text_is_latin1(subject: str, encoding: str) -> None:
    parsed = parse_message(
        mail(
            "From: Li Wei <li@example.cn>",
            b"Subject: " + subject.encode(encoding),
            "MIME-Version: 1.0",
            'Content-Type: multipart/alternative; boundary="alt"',
            body=(
                b"--alt\nContent-Type: text/plain; charset=iso-8859-1\n\nSee below.\n"
                b"--alt\nContent-Type: text/html; charset=iso-8859-1\n\n<p>See below.</p>\n"
                b"--alt--\n"
            ),
        )
    )
    # Before, the text part's iso-8859-1 read it: "»Ø¸´£º´òÓ¡»úÎÊÌâ".
    assert parsed.subject == subject


def test_raw_subject_takes_the_charset_of_a_later_part_or_an_encoded_word() -> None:
    # Three Big5 characters read as well in EUC-KR (싻닥녔): only the mail says which it is.
    subject = "請款單".encode("big5")
    later_part = parse_message(
        mail(
            "From: chen@example.tw",
            b"Subject: " + subject,
            'Content-Type: multipart/mixed; boundary="mix"',
            body=(
                b"--mix\nContent-Type: text/plain; charset=iso-8859-1\n\nHello\n"
                b"--mix\nContent-Type: text/plain; charset=big5\n\n"
                + CHINESE_TRADITIONAL.encode("big5")
                + b"\n--mix--\n"
            ),
        )
    )
    assert later_part.subject == "請款單"
    encoded_name = parse_message(
        mail(
            f"From: {encoded_word('陳大文', 'big5', 'big5')} <chen@example.tw>",
            b"Subject: " + subject,
            "Content-Type: text/plain; charset=iso-8859-1",
        )
    )
    assert encoded_name.subject == "請款單"
    assert encoded_name.from_ == Address("chen@example.tw", "陳大文")


def test_undeclared_koi8_r_in_capitals_is_read_as_koi8_r_in_body_and_subject() -> None:
    parsed = parse_message(
        mail(
            "From: ivan@example.ru",
            b"Subject: " + "ТЕСТ".encode("koi8_r"),
            body="ТЕСТ".encode("koi8_r"),
        )
    )
    # cp1251 reads these bytes as "феуф".
    assert (parsed.subject, parsed.text) == ("ТЕСТ", "ТЕСТ")


def test_encoded_display_names_including_quoted_ones() -> None:
    parsed = parse_message(
        mail(
            f"From: {encoded_word('Иван Петров', 'utf-8', 'utf-8')} <ivan@example.ru>",
            f'To: "{encoded_word("Пупкин", "koi8-r", "koi8_r")}" <p@example.ru>,'
            " =?iso-8859-1?Q?Andr=E9?= <andre@example.fr>",
            "Subject: =?utf-8?Q?Caf=C3=A9?= =?utf-8?Q?_ouvert?=",
        )
    )
    assert parsed.from_ == Address("ivan@example.ru", "Иван Петров")
    assert parsed.to == (Address("p@example.ru", "Пупкин"), Address("andre@example.fr", "André"))
    assert parsed.subject == "Café ouvert"


def test_iso_2022_jp_in_7bit_is_decoded_not_left_as_escapes() -> None:
    parsed = parse_message(
        mail(
            "From: a@example.jp",
            "Content-Type: text/plain; charset=ISO-2022-JP",
            "Content-Transfer-Encoding: 7bit",
            body=JAPANESE.encode("iso2022_jp"),
        )
    )
    assert parsed.text == JAPANESE


def test_undeclared_charsets_and_broken_content_types() -> None:
    undeclared = parse_message(mail("From: a@example.jp", body=JAPANESE.encode("iso2022_jp")))
    assert undeclared.text == JAPANESE
    no_semicolon = parse_message(
        mail(
            "From: a@example.jp",
            'Content-Type: text/plain\n   charset="iso-2022-jp"',
            body=JAPANESE.encode("iso2022_jp"),
        )
    )
    assert no_semicolon.text == JAPANESE
    unknown = parse_message(
        mail(
            "From: a@example.ru",
            "Content-Type: text/plain; charset=x-klingon",
            body=" ".join([RUSSIAN] * 3).encode("cp1251"),
        )
    )
    assert unknown.text == " ".join([RUSSIAN] * 3)
    assert any("x-klingon" in defect for defect in unknown.defects)


def test_html_only_mail_is_rendered_to_text() -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body>"
        "<p>The printer is <b>jammed</b>.</p><ul><li>floor 3</li></ul></body></html>"
    )
    parsed = parse_message(mail("From: a@example.com", "Content-Type: text/html", body=html))
    assert parsed.html == html
    assert "The printer is jammed." in parsed.text
    assert "floor 3" in parsed.text
    assert "<" not in parsed.text and "color" not in parsed.text


def test_alternative_mail_keeps_the_text_part_and_the_html() -> None:
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "MIME-Version: 1.0",
            'Content-Type: multipart/alternative; boundary="alt"',
            body=(
                "--alt\nContent-Type: text/plain; charset=utf-8\n\nPlain words\n"
                "--alt\nContent-Type: text/html; charset=utf-8\n\n<p>Rich words</p>\n--alt--\n"
            ),
        )
    )
    # The line break before a boundary belongs to the boundary (RFC 2046).
    assert parsed.text == "Plain words"
    assert parsed.html == "<p>Rich words</p>"


ORDER_HTML = (
    "<html><head><style>td {padding: 4px}</style></head><body>"
    "<p>Hello,</p><p>our order 4711 arrived with two broken toner cartridges:</p>"
    "<table><tr><td>TN-2420</td><td>2 pieces</td><td>cracked housing</td></tr>"
    "<tr><td>DR-2400</td><td>1 piece</td><td>missing seal</td></tr></table>"
    "<p>Please send replacements to our office in Leeds.</p><p>Kind regards,<br>Carol</p>"
    "</body></html>"
)


def _alternative(plain: str, html: str) -> bytes:
    return mail(
        "From: Carol <carol@customer.test>",
        "Subject: Broken toner",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="alt"',
        body=(
            f"--alt\nContent-Type: text/plain; charset=utf-8\n\n{plain}\n"
            f"--alt\nContent-Type: text/html; charset=utf-8\n\n{html}\n--alt--\n"
        ),
    )


@pytest.mark.parametrize(
    "stub",
    [
        "This is an HTML message. Please use an HTML capable mail program to read it.",
        "Your mail client cannot show this message. View it in your browser.",
        "Hello,",
        "Hello,\n\nsee below.\n",
    ],
)
def test_a_stub_text_part_gives_way_to_the_html(stub: str) -> None:
    parsed = parse_message(_alternative(stub, ORDER_HTML))
    assert "two broken toner cartridges" in parsed.text
    assert "DR-2400" in parsed.text and "missing seal" in parsed.text
    assert parsed.html == ORDER_HTML


def test_a_faithful_text_part_is_kept_beside_richer_html() -> None:
    plain = (
        "Hello,\n\nour order 4711 arrived with two broken toner cartridges:\n\n"
        "TN-2420, 2 pieces, cracked housing\nDR-2400, 1 piece, missing seal\n\n"
        "Please send replacements to our office in Leeds.\n\nKind regards,\nCarol"
    )
    html = ORDER_HTML.replace("<p>Kind", "<p><img alt='ACME Ltd, Leeds'> Kind")
    assert parse_message(_alternative(plain, html)).text == plain
    short = "Thanks, that fixed it.\nCarol"
    assert parse_message(_alternative(short, f"<p>{short}</p>")).text == short


def test_text_after_the_end_of_the_html_is_kept() -> None:
    # QQ Mail writes part of the message after </html>.
    html = "<html><body><p>Hello,</p></body></html>\r\n<div>the printer is jammed again.</div>"
    parsed = parse_message(mail("From: a@example.cn", "Content-Type: text/html", body=html))
    assert "Hello," in parsed.text
    assert "the printer is jammed again." in parsed.text


def test_line_endings_are_normalised_and_nul_removed() -> None:
    raw = b"From: a@example.com\r\nSubject: crlf\r\n\r\nfirst\r\nsec\x00ond\rthird\r\n"
    parsed = parse_message(raw)
    assert parsed.text == "first\nsecond\nthird\n"
    assert parsed.subject == "crlf"


def test_attachments_are_decoded_bytes() -> None:
    payload = bytes(range(256)) * 4
    encoded = base64.encodebytes(payload).decode()
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "MIME-Version: 1.0",
            'Content-Type: multipart/mixed; boundary="mix"',
            body=(
                "--mix\nContent-Type: text/plain\n\nSee attached.\n"
                '--mix\nContent-Type: application/octet-stream; name="data.bin"\n'
                "Content-Transfer-Encoding: base64\n"
                'Content-Disposition: attachment; filename="=?utf-8?Q?r=C3=A9sum=C3=A9.bin?="\n\n'
                f"{encoded}"
                "--mix\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n"
                "Content-ID: <logo@example.com>\n\niVBORw0KGgoAAAANSUhEUgAAAAE\n--mix--\n"
            ),
        )
    )
    assert parsed.text == "See attached."
    first, second = parsed.attachments
    assert (first.filename, first.content_type, first.content) == (
        "résumé.bin",
        "application/octet-stream",
        payload,
    )
    # A damaged base64 body (one stray character) still opens, as in a mail client.
    assert second.filename == "attachment.png"
    assert second.content.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("a\x00b.exe", "ab.exe"),
        ("C:\\x\\y.txt", "y.txt"),
        ("..\\..\\boot.ini", "boot.ini"),
        ("report..final...pdf", "report.final.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("tab\tand\nnewline.txt", "tabandnewline.txt"),
        ("..", "attachment.pdf"),
        ("", "attachment.pdf"),
        ("/", "attachment.pdf"),
    ],
)
def test_filenames_are_made_harmless(name: str, expected: str) -> None:
    assert safe_filename(name, "application/pdf") == expected


def test_very_long_filenames_keep_their_extension() -> None:
    cleaned = safe_filename("x" * 5000 + ".docx", "application/octet-stream")
    assert len(cleaned) == MAX_FILENAME
    assert cleaned.endswith(".docx")
    assert len(safe_filename("y" * 5000, "text/plain")) == MAX_FILENAME


def _uuencoded(name: str, data: bytes) -> str:
    lines = "".join(binascii.b2a_uu(data[i : i + 45]).decode() for i in range(0, len(data), 45))
    return f"begin 644 {name}\n{lines}`\nend\n"


def test_uuencoded_files_in_the_text_become_attachments() -> None:
    # Lotus Notes sends its attachments this way, inside the text part.
    sheet, picture = random.Random(3).randbytes(5_000), bytes(range(256)) * 3
    body = (
        "Hello,\n\nplease find the figures attached.\n\n"
        + _uuencoded("Q1 figures.xls", sheet)
        + "\n"
        + _uuencoded("../photo.png", picture.rstrip(b"\xff"))
        + "\nRegards,\nHans\n"
    )
    parsed = parse_message(
        mail("From: hans@example.de", "Subject: figures", "Content-Type: text/plain", body=body)
    )
    assert parsed.text.startswith("Hello,\n\nplease find the figures attached.\n")
    assert parsed.text.rstrip().endswith("Regards,\nHans")
    assert "begin 644" not in parsed.text and "\nM" not in parsed.text
    assert [(a.filename, a.content_type, a.content) for a in parsed.attachments] == [
        ("Q1 figures.xls", "application/vnd.ms-excel", sheet),
        ("photo.png", "image/png", picture.rstrip(b"\xff")),
    ]


def test_prose_that_looks_like_uuencoding_stays_in_the_text() -> None:
    body = "We begin at dawn.\nbegin 644 is the usual mode\nand then we end\nend\n"
    parsed = parse_message(mail("From: a@example.com", body=body))
    assert parsed.text == body
    assert parsed.attachments == ()


@pytest.mark.parametrize(
    ("content_id", "expected"),
    [
        ("<image001.jpg@01D9A1B2.C3D4E5F0>", "image001.jpg"),
        ("<part1.06090408.01060107@example.com>", "attachment.jpg"),
        ("", "attachment.jpg"),
    ],
)
def test_an_unnamed_image_takes_its_name_from_its_content_id(
    content_id: str, expected: str
) -> None:
    header = f"Content-ID: {content_id}\n" if content_id else ""
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "MIME-Version: 1.0",
            'Content-Type: multipart/related; boundary="rel"',
            body=(
                '--rel\nContent-Type: text/html\n\n<p>Logo: <img src="cid:image001.jpg"></p>\n'
                f"--rel\nContent-Type: image/jpeg\n{header}Content-Transfer-Encoding: base64\n\n"
                "/9j/4AAQSkZJRg==\n--rel--\n"
            ),
        )
    )
    assert [a.filename for a in parsed.attachments] == [expected]


def test_malicious_filenames_in_a_real_message() -> None:
    parts = [
        ('filename="../../etc/passwd"', "passwd"),
        ("filename*=utf-8''a%00b.exe", "ab.exe"),
        (f'filename="{"A" * 5000}.pdf"', "A" * (MAX_FILENAME - 4) + ".pdf"),
        ('filename="C:\\\\x\\\\y.txt"', "y.txt"),
    ]
    body = "".join(
        f"--mix\nContent-Type: application/octet-stream\nContent-Disposition: attachment; {param}"
        "\n\nxx\n"
        for param, _ in parts
    )
    parsed = parse_message(
        mail(
            "From: a@example.com",
            'Content-Type: multipart/mixed; boundary="mix"',
            body=body + "--mix--\n",
        )
    )
    assert [a.filename for a in parsed.attachments] == [expected for _, expected in parts]


def _raw_named(name: bytes, part_type: bytes, body_type: bytes = b"text/plain") -> bytes:
    """A mail whose attachment is named with raw 8-bit bytes, as some clients write it."""
    return (
        b"From: a@example.com\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="mix"\n\n'
        b"--mix\nContent-Type: " + body_type + b"\n\nSee the file.\n"
        b"--mix\nContent-Type: " + part_type + b"\n"
        b'Content-Disposition: attachment; filename="' + name + b'"\n\nxx\n--mix--\n'
    )


@pytest.mark.parametrize(
    ("raw", "expected", "defect"),
    [
        # UTF-8 is read first, as in a raw subject: no defect, nothing was guessed.
        (_raw_named("Счёт №5.pdf".encode(), b"text/plain; charset=utf-8"), "Счёт №5.pdf", None),
        (_raw_named("Größe.pdf".encode(), b"application/pdf"), "Größe.pdf", None),
        # Then the part's own charset, then the body's.
        (
            _raw_named("Счёт №5.txt".encode("cp1251"), b"text/plain; charset=windows-1251"),
            "Счёт №5.txt",
            "raw 8-bit header decoded as cp1251",
        ),
        (
            _raw_named(
                "Счёт 5.pdf".encode("koi8_r"), b"application/pdf", b"text/plain; charset=koi8-r"
            ),
            "Счёт 5.pdf",
            "raw 8-bit header decoded as koi8-r",
        ),
        # Nothing declared anywhere: detected.
        (
            _raw_named("Договор поставки.pdf".encode("cp1251"), b"application/pdf"),
            "Договор поставки.pdf",
            "raw 8-bit header decoded as cp1251",
        ),
        # Cut inside its last character (Yahoo bounds the length in bytes), even beside cp1251.
        (
            _raw_named(
                "Картинка с очень длинным именем".encode()[:-1],
                b"image/png",
                b"text/plain; charset=windows-1251",
            ),
            "Картинка с очень длинным имене\ufffd",
            "raw 8-bit header is UTF-8 with one invalid sequence",
        ),
        # Still made harmless.
        (_raw_named("../../отчёт\x01.pdf".encode(), b"application/pdf"), "отчёт.pdf", None),
    ],
)
def test_raw_8bit_filenames_are_decoded(raw: bytes, expected: str, defect: str | None) -> None:
    parsed = parse_message(raw)
    assert [a.filename for a in parsed.attachments] == [expected]
    found = [d for d in parsed.defects if d.startswith("attachment filename:")]
    assert found == ([f"attachment filename: {defect}"] if defect else [])


def test_attached_message_is_one_attachment_and_not_body_text() -> None:
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "Subject: Fwd: the original",
            'Content-Type: multipart/mixed; boundary="mix"',
            body=(
                "--mix\nContent-Type: text/plain\n\nForwarding this.\n"
                "--mix\nContent-Type: message/rfc822\n\n"
                "From: b@example.org\nSubject: original subject\n\nOriginal words.\n"
                "--mix--\n"
            ),
        )
    )
    assert parsed.text == "Forwarding this."
    (attached,) = parsed.attachments
    assert attached.content_type == "message/rfc822"
    assert attached.filename == "attachment.eml"
    assert b"Subject: original subject" in attached.content
    assert b"Original words." in attached.content


def test_multipart_without_boundary_keeps_its_text() -> None:
    parsed = parse_message(
        mail("From: a@example.com", "Content-Type: multipart/mixed", body="Words that stay.\n")
    )
    assert "Words that stay." in parsed.text


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["<a@x> <b@y>"], ("a@x", "b@y")),
        (["<a@x>,<b@y>, <a@x>"], ("a@x", "b@y")),
        (["a@x b@y"], ("a@x", "b@y")),
        (["a@x,b@y;c@z"], ("a@x", "b@y", "c@z")),
        (["<invalid.   \n something@bar.net>"], ("invalid.something@bar.net",)),
        (['Your message of "Monday" <id@x> (John Doe at john@x)'], ("id@x",)),
        (["<a@x>", "<b@y> <a@x>"], ("a@x", "b@y")),
        (["<1234>"], ("1234",)),
        (["", "   ", "<>", "garbage"], ()),
    ],
)
def test_message_ids_from_malformed_references(
    values: list[str], expected: tuple[str, ...]
) -> None:
    assert message_ids(values) == expected


def test_a_long_message_id_is_bounded_alike_wherever_it_appears() -> None:
    long_id = "m" * 1200 + "@example.com"
    own = parse_message(mail("From: a@example.com", f"Message-ID: <{long_id}>"))
    reply = parse_message(
        mail("From: b@example.com", f"In-Reply-To: <{long_id}>", f"References: <{long_id}>")
    )
    assert len(own.message_id) == 998
    assert reply.in_reply_to == reply.references == (own.message_id,)


def test_threading_headers_in_a_message() -> None:
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "Message-ID: <new@example.com>",
            "In-Reply-To: someone@yahoo.com",
            "References: <foo@bar.net>",
            "References: <baz@bar.net>, <invalid.   \n something@bar.net>",
        )
    )
    assert parsed.message_id == "new@example.com"
    assert parsed.in_reply_to == ("someone@yahoo.com",)
    assert parsed.references == ("foo@bar.net", "baz@bar.net", "invalid.something@bar.net")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 2 Mar 2026 10:00:00 +0100", datetime(2026, 3, 2, 9, 0, tzinfo=UTC)),
        ("2 Mar 2026 10:00 -0000", datetime(2026, 3, 2, 10, 0, tzinfo=UTC)),
        ("Sat, 30 Jun 2012 06:05:59 -0700 (PDT)", datetime(2012, 6, 30, 13, 5, 59, tzinfo=UTC)),
        ("Tue, 31 Feb 2012 10:00:00 +0000", None),
        ("2012-10-31 04-46-42", None),
        ("yesterday", None),
        ("Mon, 2 Mar 99999 10:00:00 +0000", None),
        ("Mon, 2 Mar 2026 25:61:00 +0000", None),
        ("", None),
    ],
)
def test_dates_are_utc_or_none(value: str, expected: datetime | None) -> None:
    parsed = parse_message(mail("From: a@example.com", f"Date: {value}"))
    assert parsed.date == expected
    assert parsed.date is None or parsed.date.tzinfo is UTC


def test_missing_date_is_none() -> None:
    assert parse_message(mail("From: a@example.com")).date is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("Return-Path: <>", ""),
        ("Return-Path: < >", ""),
        ("Return-Path: <Bounce+1@Example.COM>", "bounce+1@example.com"),
        ("Return-Path: owner-list@example.org", "owner-list@example.org"),
        ("Return-Path: <MAILER-DAEMON>", "mailer-daemon"),
    ],
)
def test_return_path(header: str | None, expected: str | None) -> None:
    headers = [header] if header else []
    assert parse_message(mail(*headers, "From: a@example.com")).return_path == expected


def test_unusable_addresses_are_skipped_with_a_defect() -> None:
    parsed = parse_message(
        mail(
            "From: MAILER-DAEMON (Mail Delivery System)",
            "To: broken@, <ok@example.com>, undisclosed-recipients:;",
        )
    )
    assert parsed.from_ is None
    assert parsed.to == (Address("ok@example.com"),)
    assert any(defect.startswith("from:") for defect in parsed.defects)
    assert parse_message(mail("Subject: no sender")).from_ is None


def test_addresses_no_mailbox_can_have_are_left_out_with_a_defect() -> None:
    local, domain = "l" * 320, "d" * 252 + ".test"
    parsed = parse_message(
        mail(
            f"From: Junk <{local}@example.com>",
            f"To: support@example.com, {'x' * 400}@example.com",
            f"Cc: {local}@example.com, Ann <ann@example.com>, bob@{domain}",
            f"Reply-To: {local}@example.com",
        )
    )
    assert parsed.to == (Address("support@example.com"),)
    assert parsed.cc == (Address("ann@example.com", "Ann"),)
    assert parsed.reply_to == ()
    # The sender is kept as written: the pipeline refuses the mail rather than answer another.
    assert parsed.from_ == Address(f"{local}@example.com", "Junk")
    dropped = [d for d in parsed.defects if " left out: " in d]
    assert [d.split(":")[0] for d in dropped] == ["to", "cc", "cc", "reply-to"]
    assert dropped[0].endswith("it is longer than 320 octets")
    assert dropped[1].endswith("it is longer than 320 octets")
    assert dropped[2].endswith("its domain is longer than 255 octets")


def test_control_characters_never_reach_a_display_name() -> None:
    parsed = parse_message(mail("From: =?utf-8?q?Ann=00_=07Smith?= <ann@example.com>"))
    assert parsed.from_ == Address("ann@example.com", "Ann Smith")


def test_headers_are_decoded_in_order() -> None:
    parsed = parse_message(
        mail(
            "Received: from a by b",
            "Subject: =?utf-8?B?0J/RgNC40LLQtdGC?=",
            "Received: from c\n by d",
            "X-Custom: one",
        )
    )
    assert parsed.headers == (
        ("Received", "from a by b"),
        ("Subject", "Привет"),
        ("Received", "from c by d"),
        ("X-Custom", "one"),
    )
    assert parsed.header_all("received") == ("from a by b", "from c by d")


def test_deep_nesting_is_refused_with_a_parse_error() -> None:
    with pytest.raises(MessageParseError, match="nested"):
        parse_message(nested(2000))
    with pytest.raises(MessageParseError, match="nested"):
        parse_message(nested(150))
    assert parse_message(nested(30)).text == "deep down\n"


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n\t", b"\x00\x00"])
def test_nothing_to_parse_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(MessageParseError):
        parse_message(raw)


def test_a_headerless_body_still_parses() -> None:
    parsed = parse_message(b"just some words\nwithout any header\n")
    assert "just some words" in parsed.text
    assert parsed.from_ is None
    assert parsed.message_id == ""


def test_a_header_continued_without_indentation_keeps_the_subject_and_the_body() -> None:
    first, second = "Принтер на третьем", " этаже не печатает"
    raw = mail(
        "From: Ivan <ivan@example.ru>",
        "To: support@example.com",
        f"Subject: {encoded_word(first, 'utf-8', 'utf-8')}",
        encoded_word(second, "utf-8", "utf-8"),  # the continuation lost its white space
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body=base64.encodebytes(RUSSIAN.encode()),
    )
    parsed = parse_message(raw)
    assert parsed.subject == first + second
    assert parsed.text == RUSSIAN
    assert parsed.header("content-transfer-encoding") == "base64"
    assert "1 unindented header line(s) read as continuations" in parsed.defects


def test_unindented_continuations_of_addresses_and_of_a_last_header() -> None:
    parsed = parse_message(
        mail(
            "From: a@example.com",
            "To: support@example.com,",
            "Ann <ann@example.com>,",
            "bob@example.com",
            "Subject: two parts",
            "MIME-Version: 1.0",
            "Content-Type: multipart/mixed;",
            'boundary="mix"',  # the last line of the header block
            body="--mix\nContent-Type: text/plain\n\nInside.\n--mix--\n",
        )
    )
    assert [a.email for a in parsed.to] == [
        "support@example.com",
        "ann@example.com",
        "bob@example.com",
    ]
    assert parsed.text == "Inside."


@pytest.mark.parametrize("spaced", ["Subject", "From", "To"])
def test_white_space_before_a_colon_keeps_the_header_and_those_after_it(spaced: str) -> None:
    """RFC 5322's obsolete syntax allows ``Subject : x``; the email package ends the headers
    there, which lost the From of the mail."""
    lines = {
        "Subject": "Subject: Printer jammed",
        "From": "From: Ann <ann@customer.test>",
        "To": "To: support@example.com",
    }
    lines[spaced] = lines[spaced].replace(":", " \t :", 1)
    raw = mail(
        lines["Subject"],
        lines["From"],
        lines["To"],
        "Message-ID: <spaced@customer.test>",
        "Date: Mon, 2 Mar 2026 10:00:00 +0100",
        body="The printer is jammed.\n",
    )
    parsed = parse_message(raw)
    assert parsed.subject == "Printer jammed"
    assert parsed.from_ == Address("ann@customer.test", "Ann")
    assert [a.email for a in parsed.to] == ["support@example.com"]
    assert parsed.message_id == "spaced@customer.test"
    assert parsed.date == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert parsed.text == "The printer is jammed.\n"
    assert "1 header name(s) followed by white space before the colon" in parsed.defects


def test_a_body_line_with_white_space_before_a_colon_stays_in_the_body() -> None:
    parsed = parse_message(b"From: a@example.com\nSubject: hi\nHello,\nNote : call me\n")
    assert parsed.text == "Hello,\nNote : call me\n"


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@example.com\nSubject: no blank line\nHello there,\nthe printer is jammed.\n",
        b"From: a@example.com\nSubject: no blank line\nHello there,\n\nthe printer is jammed.\n",
    ],
)
def test_a_body_without_its_blank_line_is_still_the_body(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert parsed.subject == "no blank line"
    assert parsed.text.startswith("Hello there,\n")
    assert "the printer is jammed." in parsed.text


def test_mangled_mail_parses_or_is_refused_but_never_crashes() -> None:
    sample = mail(
        "From: =?utf-8?B?0JjQstCw0L0=?= <ivan@example.ru>",
        "To: support@example.com",
        "Subject: =?koi8-r?Q?=F0=D2=C9=D7=C5=D4?=",
        "Date: Mon, 2 Mar 2026 10:00:00 +0100",
        "References: <a@x> <b@y>",
        'Content-Type: multipart/mixed; boundary="mix"',
        body=(
            "--mix\nContent-Type: text/plain; charset=windows-1251\n"
            "Content-Transfer-Encoding: quoted-printable\n\n=CF=F0=E8=E2=E5=F2\n"
            "--mix\nContent-Type: message/rfc822\n\nFrom: b@x\nSubject: inner\n\nInner.\n"
            '--mix\nContent-Type: application/pdf; name="a.pdf"\n'
            "Content-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--mix--\n"
        ),
    )
    rng = random.Random(2026)
    specials = [b"\x00", b"\xff", b"=?", b"?=", b"--mix", b"\n", b"<", b";", b'"', b"\x1b$B"]
    for _ in range(400):
        data = bytearray(sample)
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[position : position + rng.randint(0, 8)] = rng.choice(specials)
            else:
                data[position] = rng.randrange(256)
        with contextlib.suppress(MessageParseError):
            assert isinstance(parse_message(bytes(data)), ParsedMessage)


# -- long base64 bodies ------------------------------------------------------------------------


def _with_attachment(data: bytes, *, newline: bytes = b"\r\n", encoding: str = "base64") -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", newline)
    return newline.join(
        [
            b"From: Ann <ann@customer.test>",
            b"Subject: report",
            b'Content-Type: multipart/mixed; boundary="XX"',
            b"",
            b"--XX",
            b"Content-Type: text/plain",
            b"",
            b"See the report.",
            b"--XX",
            b'Content-Type: application/octet-stream; name="report.bin"',
            b"Content-Transfer-Encoding: " + encoding.encode(),
            b"",
            encoded + b"--XX--",
            b"",
        ]
    )


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_a_large_base64_attachment_is_decoded_byte_for_byte(newline: bytes) -> None:
    data = random.Random(7).randbytes(300_000)
    raw = _with_attachment(data, newline=newline)
    aside = _set_aside_base64_bodies(raw)
    assert len(aside.bodies) == 1 and aside.shortened.count(b"\n") < 20  # not 5,000 lines

    parsed = parse_message(raw)

    assert [(a.filename, a.content) for a in parsed.attachments] == [("report.bin", data)]
    assert parsed.text == "See the report."


def test_base64_that_is_only_quoted_text_is_left_as_it_was() -> None:
    block = base64.encodebytes(random.Random(8).randbytes(9_000)).decode()
    body = f"Someone sent me this:\n\nContent-Transfer-Encoding: base64\n\n{block}\nWhat is it?\n"
    raw = mail("From: ann@customer.test", "Subject: odd", body=body)

    parsed = parse_message(raw)

    assert parsed.text.rstrip("\n") == body.rstrip("\n")


def test_an_attached_message_with_a_large_attachment_keeps_its_lines() -> None:
    inner = _with_attachment(random.Random(9).randbytes(60_000), newline=b"\n")
    raw = b"\n".join(
        [
            b"From: Ann <ann@customer.test>",
            b"Subject: Fwd: report",
            b'Content-Type: multipart/mixed; boundary="OUTER"',
            b"",
            b"--OUTER",
            b"Content-Type: text/plain",
            b"",
            b"Forwarding this.",
            b"--OUTER",
            b"Content-Type: message/rfc822",
            b"",
            inner,
            b"--OUTER--",
            b"",
        ]
    )

    attached = parse_message(raw).attachments

    assert len(attached) == 1
    assert attached[0].content.rstrip(b"\n") == inner.rstrip(b"\n")
    assert max(len(line) for line in attached[0].content.splitlines()) <= 76


def _peak_allocated(parse: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        parse()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_big_single_part_body_of_short_lines_is_parsed_in_little_memory() -> None:
    """The email package held each of its 700,000 lines as a string: 30 times the mail."""
    head = b"From: a@customer.test\r\nSubject: lines\r\nContent-Type: text/plain\r\n\r\n"
    raw = head + b"x\r\n" * 700_000
    parsed = parse_message(raw)
    assert parsed.text == "x\n" * 700_000
    assert parsed.subject == "lines" and not parsed.attachments
    assert _peak_allocated(lambda: parse_message(raw)) < 8 * len(raw)


def test_a_big_mail_whose_headers_end_early_is_parsed_as_before() -> None:
    """A line that is no header ends them, and the body begins there, blank line or not."""
    raw = b"From: a@customer.test\r\nSubject: early\r\nnot a header\r\n" + b"y\r\n" * 400_000
    raw += b"\r\nmore\r\n"
    parsed = parse_message(raw)
    assert parsed.text.startswith("not a header\ny\n")
    assert parsed.text.endswith("y\n\nmore\n")
