"""The repairs of the top header block, checked against the email package that reads them."""

from __future__ import annotations

import email
import random
import re
import tracemalloc
from email.policy import compat32

import pytest

from mailsupport.core.headerblock import body_inside, repair_header_block

# The blank line that ends a header block, a bare CR being a line break as for the email package.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r(?!\n)|\n)")
# No "From ": the email package pushes a "From " line that ends the headers back to the body,
# after the blank line it has already dropped, so no offset gives that body.
_PIECES = [b"Subject", b"To", b"X-a", b":", b" : ", b"\t:", b" ", b"\t", b"x", b"=?", b"a=", b","]
_PIECES += [b"\r\n", b"\n", b"\r", b"\r\n", b"\n", b"\x0b", b";", b"\r\n\t", b"\n "]


def _email_package_body(raw: bytes) -> bytes:
    message = email.message_from_bytes(raw, policy=compat32)
    payload = message.get_payload()
    assert isinstance(payload, str)
    return payload.encode("ascii", "surrogateescape")


def test_the_body_starts_where_the_email_package_starts_it_once_repaired() -> None:
    rng = random.Random(8)
    for _ in range(3000):
        raw = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30))) + b"\nend"
        repaired, _ = repair_header_block(raw)
        inside = body_inside(raw)
        if inside is None:
            blank = _BLANK_LINE.search(raw)
            expected = raw[blank.end() :] if blank else b""
        else:
            expected = raw[inside[1] :]
        assert _email_package_body(repaired) == expected, (raw, inside)


def test_white_space_before_the_colon_is_removed_among_the_headers_only() -> None:
    raw = b"Subject : a\r\nFrom\t: b@x.test\r\nTo  :c@x.test\r\n\r\nNote : stays\r\n"
    repaired, notes = repair_header_block(raw)
    assert repaired == b"Subject: a\r\nFrom: b@x.test\r\nTo:c@x.test\r\n\r\nNote : stays\r\n"
    assert notes == ["3 header name(s) followed by white space before the colon"]
    # A body that lacks its blank line keeps a line of that shape as it was.
    body = b"From: a@x.test\nSubject: hi\nHello,\nNote : call me\nThanks\n"
    assert repair_header_block(body) == (body, [])
    assert body_inside(body) == (len(b"From: a@x.test\nSubject: hi\n"),) * 2


def test_mail_without_headers_is_all_body() -> None:
    assert body_inside(b"Hello there\nnothing else") == (0, 0)
    assert body_inside(b"\r\nHello there") == (0, 2)
    assert body_inside(b"Tel : 123\nHello") == (len(b"Tel : 123\n"),) * 2
    assert body_inside(b"From: a@x.test\n\nHello") is None


def test_repairing_millions_of_lines_takes_memory_of_the_mail_only() -> None:
    """Mail is repaired by position, not split into a list of lines."""
    spaced = b"A : b\r\n" * 100_000 + b"\r\nbody"
    stray = b"Subject: hi\r\n" + b"x\r\nY: z\r\n" * 100_000 + b"\r\nbody"
    for raw in (spaced, stray):
        tracemalloc.start()
        try:
            repaired, _ = repair_header_block(raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(repaired) < 2 * len(raw)
        assert peak < 3 * len(raw)


def test_searching_a_piece_at_a_time_finds_what_one_search_finds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The patterns run over a block in pieces (so that no one call holds the interpreter lock
    for long) and must find exactly the first match a search of the whole block finds."""

    from mailsupport.core import headerblock

    monkeypatch.setattr(headerblock, "_PIECE", 7)
    monkeypatch.setattr(headerblock, "_OVERLAP", 40)
    lines = [b"Subject: x", b"From : a@b", b"\tcontinued", b"no colon here", b"", b"From x", b"X:"]
    ends = [b"\r\n", b"\n", b"\r"]
    rnd = random.Random(3)
    patterns = (headerblock._BLANK_LINE, headerblock._ODD, headerblock._NEXT_FIELD)
    for _ in range(2000):
        raw = b"".join(rnd.choice(lines) + rnd.choice(ends) for _ in range(rnd.randint(0, 12)))
        start = rnd.randint(0, len(raw))
        for pattern in patterns:
            whole = pattern.search(raw, start, len(raw))
            pieces = headerblock._search(pattern, raw, start, len(raw))
            assert (pieces and pieces.span()) == (whole and whole.span()), raw
