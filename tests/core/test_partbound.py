from __future__ import annotations

import tracemalloc

from mailsupport.core.parse import parse_message
from mailsupport.core.partbound import MAX_PARTS, bound_parts

HEAD = (
    b"From: carol@customer.test\r\nTo: help@support.test\r\nSubject: parts\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="p"\r\n\r\n'
)


def _mail(parts: int) -> bytes:
    body = b"".join(
        b"--p\r\nContent-Type: text/plain\r\n\r\nhello part %d\r\n" % n for n in range(parts)
    )
    return HEAD + body + b"--p--\r\n"


def test_parts_past_the_bound_are_left_to_the_stored_message() -> None:
    raw = _mail(20_000)
    tracemalloc.start()
    try:
        parsed = parse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # A Message for each of 20,000 parts took about 17 times the mail.
    assert peak < 3 * len(raw)
    lines = parsed.text.split("\n")
    assert lines[0] == "hello part 0" and lines[-1] == f"hello part {MAX_PARTS - 1}"
    assert any(f"more than {MAX_PARTS} MIME parts" in d for d in parsed.defects)


def test_mail_within_the_bound_is_untouched() -> None:
    raw = _mail(MAX_PARTS - 1)  # and its closing delimiter
    assert bound_parts(raw) == (raw, None)
    signature_lines = HEAD + b"--p\r\n\r\n" + b"-- \r\nsig\r\n" * 5000 + b"--p--\r\n"
    assert bound_parts(signature_lines) == (signature_lines, None)
