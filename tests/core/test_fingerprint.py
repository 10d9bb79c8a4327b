"""Fingerprints of what a mail says: the same text gives the same digest, however sent."""

from __future__ import annotations

from mailsupport.core.fingerprint import attachment_digest, cheap_to_fingerprint, fingerprint

AWAY = "I am out of the office until Monday.\nYour mail will be read then."


def test_spacing_and_case_do_not_count() -> None:
    rewrapped = "  i am OUT of the office until Monday. Your\n\nmail will be read then.\n"
    assert fingerprint(AWAY) == fingerprint(rewrapped)
    assert fingerprint(AWAY) != fingerprint(AWAY.replace("Monday", "Tuesday"))
    assert len(fingerprint(AWAY)) == 32


def test_the_quoted_mail_does_not_count() -> None:
    answers = [
        f"{AWAY}\n\nOn Mon, 2 Mar 2026 at 09:0{n}, ACME Support <support@example.com> wrote:\n"
        f"> We have registered it as request #{n}.\n"
        for n in range(3)
    ]
    outlook = (
        f"{AWAY}\n\n________________________________\nFrom: ACME Support <support@example.com>\n"
        "Sent: Monday, March 2, 2026 9:00 AM\nTo: Carol\nSubject: [ACME #7] Printer\n\n"
        "We have registered it as request #7.\n"
    )
    assert {fingerprint(text) for text in (*answers, outlook)} == {fingerprint(AWAY)}


def test_attachments_count() -> None:
    scans = [attachment_digest(bytes([n]) * 100) for n in range(2)]
    assert fingerprint("", scans[:1]) != fingerprint("", scans[1:])
    assert fingerprint("", scans) != fingerprint("", scans[::-1])
    assert fingerprint("", scans[:1]) == fingerprint("", [attachment_digest(bytes([0]) * 100)])


def test_a_mail_that_is_all_quote_is_taken_whole() -> None:
    replies = [f"On Mon, 2 Mar 2026, Dave wrote:\n> Please pay invoice {n}.\n" for n in range(2)]
    assert fingerprint(replies[0]) != fingerprint(replies[1])
    assert fingerprint(replies[0]) != fingerprint("")


def test_text_without_quote_markers_is_taken_as_it_is() -> None:
    assert cheap_to_fingerprint("Hello,\nthe printer on floor 3 is jammed.\n")
    for marked in ("> quoted", "Note: it jams", "2023年3月2日 Dave 写道：", "ORIGINAL MESSAGE"):
        assert not cheap_to_fingerprint(marked)
