from __future__ import annotations

import hashlib
import random
import re
import tracemalloc

from mailsupport.core.dedupe import dedupe_key
from mailsupport.core.headerblock import body_inside

MAIL = b"From: a@b.test\r\nMessage-ID: <x1@b.test>\r\nSubject: hi\r\n\r\nbody\r\n"


def test_trace_headers_and_line_endings_do_not_matter() -> None:
    relayed = b"Received: from mx by y; Mon, 2 Mar 2026\r\nDelivered-To: s@e.test\r\n" + MAIL
    lf_only = MAIL.replace(b"\r\n", b"\n")
    assert dedupe_key(MAIL) == dedupe_key(relayed) == dedupe_key(lf_only)
    assert dedupe_key(MAIL).message_id == "x1@b.test"


def test_same_message_id_other_body_is_another_message() -> None:
    assert dedupe_key(MAIL) != dedupe_key(MAIL.replace(b"body", b"other"))


def test_without_message_id_headers_count() -> None:
    a = b"From: a@b.test\nSubject: one\n\nbody\n"
    b = b"From: a@b.test\nSubject: two\n\nbody\n"
    assert dedupe_key(a) != dedupe_key(b)
    assert dedupe_key(a).message_id == ""
    assert dedupe_key(b"Received: x\n" + a) == dedupe_key(a)


def test_garbage_does_not_raise() -> None:
    for raw in (b"", b"\x00\xff", b"no headers at all", b"Message-ID:\n\n"):
        assert len(dedupe_key(raw).key) == 64


def test_control_characters_are_kept_out_of_the_stored_message_id() -> None:
    raw = MAIL.replace(b"<x1@b.test>", b"<x1\x00\x01@b.test>")
    assert dedupe_key(raw).message_id == "x1@b.test"
    assert dedupe_key(raw).key != dedupe_key(MAIL).key


# Keys computed by the version before bodies inside the header block were read: stored mail of
# these shapes must still be recognised.
_ORDINARY = {
    MAIL: "d035b0380c20e3d59ddb6c8789eddc0f2ababb0ca719d83722f57a71fd772661",
    b"Received: from mx by y; Mon, 2 Mar 2026\r\nFrom: a@b.test\r\n"
    b"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\nSubject: no id\r\n\r\nbody\r\n": (
        "472914f9b8365a7e6db3b8793a11fa679fb8af1b61b0917bdca72edf10b74df1"
    ),
    b"From: a@b.test\nSubject: =?utf-8?q?a?=\n=?utf-8?q?b?=\nTo: s@e.test\n\n"
    b"folded without indentation\n": (
        "d123498593d2c9db84fdb173b649e0b9c018db1b845395801b79a1f4138fe995"
    ),
    b"Subject : spaced\r\nFrom : a@b.test\r\nTo\t: s@e.test\r\n\r\nobsolete syntax\r\n": (
        "43aaaf8cb71c1c765527cbbea35774585ef1eb95b08c5457879def24fe9c2001"
    ),
    b"From: a@b.test\nTo: s@e.test\nSubject: headers only\n": (
        "057d8b02034aaf4bfbda8b1ab1b930445aaf6f0a852e219a144074322ac3e5ff"
    ),
}


def test_the_key_of_mail_with_a_header_block_is_the_one_stored_mail_has() -> None:
    for raw, key in _ORDINARY.items():
        assert dedupe_key(raw).key == key, raw


def test_mails_without_a_header_block_are_told_apart_by_their_text() -> None:
    """No headers: the whole text is the body, however it is laid out."""
    one_line = [b"please call me back", b"please call me later"]
    no_blank_line = [b"Hello,\nthe printer is jammed.\n", b"Hello,\nthe scanner is jammed.\n"]
    first_paragraph = [b"Hi Bob,\n\nthanks\n", b"Hi Ann,\n\nthanks\n"]
    blank_first = [b"\nHello Bob\n", b"\nHello Ann\n"]
    for a, b in (one_line, no_blank_line, first_paragraph, blank_first):
        assert dedupe_key(a) != dedupe_key(b), (a, b)
        assert dedupe_key(a) == dedupe_key(a.replace(b"\n", b"\r\n"))
        assert dedupe_key(a) == dedupe_key(b"Received: from mx by y; Mon, 2 Mar 2026\n" + a)


def test_a_body_without_its_blank_line_counts() -> None:
    head = b"From: a@b.test\nMessage-ID: <same@b.test>\nSubject: help\n"
    a, b = head + b"Hello,\norder 123\n", head + b"Hello,\norder 456\n"
    assert dedupe_key(a) != dedupe_key(b)
    assert dedupe_key(a) == dedupe_key(b"Received: x\n" + a)


def test_mails_of_headers_only_are_told_apart() -> None:
    assert dedupe_key(b"Subject: one\n") != dedupe_key(b"Subject: two\n")
    assert dedupe_key(b"X-Note: one\n") != dedupe_key(b"X-Note: two\n")
    assert dedupe_key(b"X-Note: one\n\nbody") != dedupe_key(b"X-Note: two\n\nbody")
    relayed = b"Received: from mx by y\nReturn-Path: <>\nX-Note: one\n"
    assert dedupe_key(relayed) == dedupe_key(b"X-Note: one\n")


def test_mbox_quoting_of_from_lines_does_not_matter() -> None:
    head = b"From: a@x.test\r\nMessage-ID: <q@x.test>\r\n\r\n"
    sent = head + b"Hi,\r\nFrom now on it works.\r\n>From the log:\r\n"
    from_mbox = head + b"Hi,\r\n>From now on it works.\r\n>>From the log:\r\n"
    assert dedupe_key(sent).key == dedupe_key(from_mbox).key
    other = head + b"Hi,\r\nFrom then on it works.\r\n>From the log:\r\n"
    assert dedupe_key(sent).key != dedupe_key(other).key


# The key as it was computed on the whole mail at once: mail stored by earlier versions must
# still be recognised, so reading the mail in pieces must give exactly this. Two things were
# added since: a body the parser finds inside the header block, and the key of a mail that has
# none of the headers it reads.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNFOLD = re.compile(rb"\r?\n[ \t]+")
_LINE_BREAK = re.compile(rb"\r?\n(?![ \t])|\r(?!\n)")
_TRACE = (b"received", b"return-path", b"delivered-to", b"x-original-to")
_IDENTITY = (b"from", b"date", b"subject", b"to")


def _first_own_line(block: bytes) -> int | None:
    """Where the first line that is no trace header starts."""
    starts = [0, *(m.end() for m in _LINE_BREAK.finditer(block))]
    for start, line in zip(starts, _LINE_BREAK.split(block), strict=True):
        if start == len(block):
            break
        trace = line.partition(b":")[0].strip().lower() in _TRACE
        if not trace and not line.startswith(b"From "):
            return start
    return None


def _canonical_body(body: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r", b"\n", body)
    return re.sub(rb"(?m)^>+(?=From )", b"", body).rstrip()


def _whole_mail_key(raw: bytes) -> tuple[str, str]:
    match = _HEADER_END.search(raw)
    block, body = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    inside = body_inside(raw)
    if inside is not None and inside[0] < len(block):
        block, body = raw[: inside[0]], raw[inside[1] :]
    headers: dict[bytes, bytes] = {}
    for line in _UNFOLD.sub(b" ", block).splitlines():
        name, sep, value = line.partition(b":")
        if sep and name and b" " not in name.strip():
            headers.setdefault(name.strip().lower(), value.strip())
    value = headers.get(b"message-id", b"")
    found = re.search(rb"<([^<>\s]+)>", value)
    token = found.group(1) if found else value.split()[0] if value.split() else b""
    message_id = token.decode("ascii", "replace")[:900]
    digest = hashlib.sha256()
    if message_id:
        digest.update(b"mid\0" + message_id.encode() + b"\0")
    else:
        for name in _IDENTITY:
            digest.update(name + b"\0" + headers.get(name, b"") + b"\0")
        own = _first_own_line(block)
        if not set(_IDENTITY) & headers.keys() and own is not None:
            body = raw[own:]
    digest.update(hashlib.sha256(_canonical_body(body)).digest())
    return digest.hexdigest(), message_id


_PIECES = [b"\r", b"\n", b"\r\n", b" ", b"\t", b">", b"From ", b"From", b":", b"Message-ID", b"x"]
_PIECES += [b"<a@b>", b"\r\n ", b"\n\t", b"\x0b", b"Subject", b"Date", b"To", b"from", b" : "]
_PIECES += [b"Received", b"=?"]


def test_the_key_is_the_same_however_the_mail_is_cut_into_pieces() -> None:
    """Line ends, folds, ">From" quoting and trailing blanks cut at every possible place."""
    rng = random.Random(5)
    for _ in range(4000):
        raw = b"".join(rng.choice(_PIECES) for _ in range(rng.randint(0, 40)))
        expected = _whole_mail_key(raw)
        for chunk in (1, 2, 3, 7, 1 << 16):
            key = dedupe_key(raw, chunk=chunk)
            assert (key.key, key.message_id) == expected, (raw, chunk)


def _peak_allocated(raw: bytes) -> int:
    tracemalloc.start()
    try:
        dedupe_key(raw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_mail_of_millions_of_short_lines_takes_little_memory() -> None:
    """The whole-mail way took 40 to 60 times the mail's size in lists of lines and matches.

    A header is still read whole once its folds are joined, the few the key reads.
    """
    short_lines = MAIL + b"x\r\n" * 1_000_000
    folded = MAIL.replace(b"Subject: hi", b"Subject: hi" + b"\r\n x" * 1_000_000)
    quoted = MAIL + b">From a\r\n" * 300_000
    no_blank_line = b"Subject: hi\r\n" + b"x\r\n" * 1_000_000
    stray = b"Subject: hi\r\n" + b"x\r\nY: z\r\n" * 300_000 + b"\r\nbody"
    no_headers = b"X: " + b"x\r\n y" * 1_000_000
    for raw in (short_lines, folded, quoted, no_blank_line, stray, no_headers):
        assert _peak_allocated(raw) < len(raw)


def test_the_header_block_ends_at_the_first_blank_line_however_lines_end() -> None:
    from mailsupport.core.dedupe import _header_end

    blank_line = re.compile(rb"\r?\n\r?\n")
    rng = random.Random(5)
    for _ in range(3000):
        raw = bytes(rng.choice(b"ab:\r\n ") for _ in range(rng.randrange(12)))
        match = blank_line.search(raw)
        assert _header_end(raw) == ((match.start(), match.end()) if match else (len(raw),) * 2)
