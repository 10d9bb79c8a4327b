from __future__ import annotations

import pytest

from mailsupport.core.subject import (
    clean_subject,
    find_ticket_number,
    strip_prefixes,
    tagged_subject,
)


@pytest.mark.parametrize(
    "subject",
    [
        "[ACME #1] Printer",
        "Re: [ACME #1] Printer",
        "RE: Re: [ACME #1] Printer",
        "Fwd: [ACME #1] Printer",
        "FW: [ACME #1] Printer",
        "AW: [ACME #1] Printer",
        "WG: AW: [ACME #1] Printer",
        "SV: [ACME #1] Printer",
        "Ответ: [ACME #1] Printer",
        "RE[2]: [ACME #1] Printer",
        "Re^3: [ACME #1] Printer",
        "回复: [ACME #1] Printer",
        "Réf : [ACME #1] Printer",
        "Printer [acme #1]",
        "Re: Printer [ ACME # 1 ]",
    ],
)
def test_tag_found_behind_any_prefix(subject: str) -> None:
    assert find_ticket_number(subject, "ACME") == 1


def test_other_tags_and_lookalikes_are_not_ours() -> None:
    assert find_ticket_number("Re: [OTHER #5] x", "ACME") is None
    assert find_ticket_number("ACME #5 without brackets", "ACME") is None
    assert find_ticket_number("[ACMEX #5]", "ACME") is None


def test_clean_subject_removes_prefixes_and_tag() -> None:
    assert clean_subject("Re: AW: [ACME #12] Printer jammed", "ACME") == "Printer jammed"
    assert clean_subject("Ответ: Re[2]: принтер", "ACME") == "принтер"


@pytest.mark.parametrize(
    ("subject", "cleaned"),
    [
        ("[URGENT] Re: Printer jammed", "[URGENT] Printer jammed"),
        ("Re: [users] Re: RE: Printer jammed", "[users] Printer jammed"),
        ("[ACME #12] Re: Printer jammed", "Printer jammed"),
        ("[URGENT]Re:Printer jammed", "[URGENT] Printer jammed"),
        ("[URGENT] Printer jammed", "[URGENT] Printer jammed"),
    ],
)
def test_a_bracket_before_a_reply_prefix_is_kept(subject: str, cleaned: str) -> None:
    assert clean_subject(subject, "ACME") == cleaned
    assert clean_subject("   ", "ACME") == "(no subject)"
    assert clean_subject("Re: Resolution needed", "ACME") == "Resolution needed"
    assert len(clean_subject("x" * 5000, "ACME")) == 250


def test_strip_prefixes_keeps_words_that_only_start_like_prefixes() -> None:
    assert strip_prefixes("Research results") == "Research results"
    assert strip_prefixes("Fwdx: y") == "Fwdx: y"


def test_tagged_subject() -> None:
    assert tagged_subject("ACME", 1042, "Printer") == "[ACME #1042] Printer"
