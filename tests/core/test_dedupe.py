from __future__ import annotations

import hashlib
import random
import re
import tracemalloc

from mailsupport.core.dedupe import dedupe_key

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


def test_mbox_quoting_of_from_lines_does_not_matter() -> None:
    head = b"From: a@x.test\r\nMessage-ID: <q@x.test>\r\n\r\n"
    sent = head + b"Hi,\r\nFrom now on it works.\r\n>From the log:\r\n"
    from_mbox = head + b"Hi,\r\n>From now on it works.\r\n>>From the log:\r\n"
    assert dedupe_key(sent).key == dedupe_key(from_mbox).key
    other = head + b"Hi,\r\nFrom then on it works.\r\n>From the log:\r\n"
    assert dedupe_key(sent).key != dedupe_key(other).key


# The key as it was computed on the whole mail at once: mail stored by earlier versions must
# still be recognised, so reading the mail in pieces must give exactly this.
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNFOLD = re.compile(rb"\r?\n[ \t]+")


def _whole_mail_key(raw: bytes) -> tuple[str, str]:
    match = _HEADER_END.search(raw)
    block, body = (raw[: match.start()], raw[match.end() :]) if match else (raw, b"")
    headers: dict[bytes, bytes] = {}
    for line in _UNFOLD.sub(b" ", block).splitlines():
        name, sep, value = line.partition(b":")
        if sep and name and b" " not in name.strip():
            headers.setdefault(name.strip().lower(), value.strip())
    value = headers.get(b"message-id", b"")
    found = re.search(rb"<([^<>\s]+)>", value)
    token = found.group(1) if found else value.split()[0] if value.split() else b""
    message_id = token.decode("ascii", "replace")[:900]
    body = re.sub(rb"\r\n|\r", b"\n", body)
    body = re.sub(rb"(?m)^>+(?=From )", b"", body).rstrip()
    digest = hashlib.sha256()
    if message_id:
        digest.update(b"mid\0" + message_id.encode() + b"\0")
    else:
        for name in (b"from", b"date", b"subject", b"to"):
            digest.update(name + b"\0" + headers.get(name, b"") + b"\0")
    digest.update(hashlib.sha256(body).digest())
    return digest.hexdigest(), message_id


_PIECES = [b"\r", b"\n", b"\r\n", b" ", b"\t", b">", b"From ", b"From", b":", b"Message-ID", b"x"]
_PIECES += [b"<a@b>", b"\r\n ", b"\n\t", b"\x0b", b"Subject", b"Date", b"To", b"from", b" : "]


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
    for raw in (short_lines, folded, quoted):
        assert _peak_allocated(raw) < len(raw)


def test_the_header_block_ends_at_the_first_blank_line_however_lines_end() -> None:
    from mailsupport.core.dedupe import _header_end

    blank_line = re.compile(rb"\r?\n\r?\n")
    rng = random.Random(5)
    for _ in range(3000):
        raw = bytes(rng.choice(b"ab:\r\n ") for _ in range(rng.randrange(12)))
        match = blank_line.search(raw)
        assert _header_end(raw) == ((match.start(), match.end()) if match else (len(raw),) * 2)
