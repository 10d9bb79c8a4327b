from __future__ import annotations

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
