"""Subject lines: the ticket tag ``[ACME #1042]`` and the reply/forward prefixes clients add."""

from __future__ import annotations

import re

# Prefixes seen in the wild, by client language: English, German, Nordic, Dutch, French,
# Spanish/Portuguese, Italian, Polish, Czech, Finnish, Turkish, Russian/Ukrainian, Chinese,
# Japanese and Korean. Matched case-insensitively, optionally numbered ("Re[2]:", "Re^3:").
_PREFIX_WORDS = (
    "re",
    "fw",
    "fwd",
    "aw",
    "wg",
    "sv",
    "vs",
    "vl",
    "antw",
    "doorst",
    "tr",
    "rif",
    "r",
    "i",
    "enc",
    "rv",
    "res",
    "odp",
    "pd",
    "přeposlat",
    "odpověď",
    "ynt",
    "ilt",
    "ответ",
    "отв",
    "пересл",
    "переслать",
    "fwd",
    "回复",
    "回覆",
    "答复",
    "转发",
    "轉寄",
    "返信",
    "転送",
    "답장",
    "전달",
)
_PREFIX_RE = re.compile(
    r"^\s*(?:(?P<tag>\[[^\]]*\])\s*)?"  # a bracket ([list], [URGENT]) may precede the prefix
    r"(?:" + "|".join(sorted({re.escape(w) for w in _PREFIX_WORDS}, key=len, reverse=True)) + r")"
    r"\s*(?:\[\d+\]|\^\d+|\(\d+\))?\s*[:：]\s*",
    re.IGNORECASE,
)
_SPACE_RE = re.compile(r"\s+")
MAX_SUBJECT = 250


def tag_pattern(tag: str) -> re.Pattern[str]:
    """The regular expression finding ``[TAG #123]`` anywhere in a subject."""
    return re.compile(r"\[\s*" + re.escape(tag) + r"\s*#\s*(\d{1,12})\s*\]", re.IGNORECASE)


def find_ticket_number(subject: str, tag: str) -> int | None:
    """The ticket number carried in the subject, whatever prefixes surround it."""
    match = tag_pattern(tag).search(subject)
    return int(match.group(1)) if match else None


def strip_prefixes(subject: str) -> str:
    """Remove any run of Re:/Fwd:/AW:/Ответ:... prefixes from the front of a subject.

    A bracket before a prefix stays: it may be a list's name or the customer's "[URGENT]",
    and the same subject without a prefix keeps it too.
    """
    previous = None
    text = subject
    while previous != text:
        previous = text
        text = _PREFIX_RE.sub(_bracket_only, text, count=1)
    return text


def _bracket_only(match: re.Match[str]) -> str:
    return f"{match['tag']} " if match["tag"] else ""


def clean_subject(subject: str, tag: str) -> str:
    """The subject a new ticket keeps: no prefixes, no tag, single spaces, bounded length."""
    text = tag_pattern(tag).sub(" ", subject)
    text = _SPACE_RE.sub(" ", strip_prefixes(_SPACE_RE.sub(" ", text))).strip()
    text = strip_prefixes(text).strip()
    return text[:MAX_SUBJECT] if text else "(no subject)"


def tagged_subject(tag: str, number: int, subject: str) -> str:
    """``[ACME #1042] Printer jammed`` for mail we send about a ticket."""
    return f"[{tag} #{number}] {subject}"
