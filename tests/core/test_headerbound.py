from __future__ import annotations

import tracemalloc
from collections.abc import Callable

from mailsupport.core.headerbound import MAX_FIELD_BYTES, MAX_FIELDS, bound_header_block
from mailsupport.core.message import ParsedMessage
from mailsupport.core.parse import parse_message

HEAD = b"From: Carol <carol@customer.test>\r\nSubject: first\r\n"
TAIL = b"To: help@support.test\r\nMessage-ID: <m1@customer.test>\r\n\r\nbody\r\n"


def _peak(parse: Callable[[], ParsedMessage]) -> tuple[ParsedMessage, int]:
    tracemalloc.start()
    try:
        parsed = parse()
        return parsed, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ordinary_mail_is_handed_on_untouched() -> None:
    raw = HEAD + b"X-Long: " + b"a" * 100_000 + b"\r\n" + TAIL
    assert bound_header_block(raw) == (raw, None)


def test_past_many_headers_only_the_first_of_each_wanted_one_is_kept() -> None:
    filler = b"X-Filler: some header value that repeats\r\n" * 50_000
    forged = b"From: mallory@attacker.test\r\nSubject: second\r\n"
    raw = HEAD + filler + forged + TAIL
    parsed, peak = _peak(lambda: parse_message(raw))
    # The email package's strings per header took about 15 times the block.
    assert peak < 3 * len(raw)
    assert len(parsed.headers) == MAX_FIELDS + 2  # To and Message-ID from past the bound
    assert parsed.from_ is not None and parsed.from_.email == "carol@customer.test"
    assert parsed.subject == "first"
    assert [a.email for a in parsed.to] == ["help@support.test"]
    assert parsed.message_id == "m1@customer.test"
    assert parsed.text.strip() == "body"
    assert any("49004 header(s) left out" in d for d in parsed.defects)


def test_a_header_folded_over_many_lines_is_cut_at_a_line_break() -> None:
    raw = HEAD + b"X-Folded: start\r\n" + b" x\r\n" * 500_000 + TAIL
    parsed, peak = _peak(lambda: parse_message(raw))
    # Each continuation line was a string of its own: about 30 times the header.
    assert peak < 3 * len(raw)
    folded = dict(parsed.headers)["X-Folded"]
    assert folded.startswith("start") and len(folded) <= MAX_FIELD_BYTES
    assert parsed.message_id == "m1@customer.test" and parsed.text.strip() == "body"
    assert any("1 cut to" in d for d in parsed.defects)


def test_one_huge_header_line_is_cut_and_ended() -> None:
    raw = HEAD + b"X-Line: " + b"y" * 2_000_000 + b"\r\n" + TAIL
    bounded, note = bound_header_block(raw)
    assert note is not None
    assert bounded == HEAD + b"X-Line: " + b"y" * (MAX_FIELD_BYTES - 8) + b"\r\n" + TAIL
