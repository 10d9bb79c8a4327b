"""Screen step: recognise machine mail before anything could answer it.

Bounces, auto-replies, list mail and abuse reports are marked on the stored message; the
marks decide whether a ticket may be opened and, later, whether any automatic mail may go back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from mailsupport.config import Config
from mailsupport.core.message import MailKind, ParsedMessage, Screening
from mailsupport.core.nullsender import is_null_sender
from mailsupport.core.screen import screen
from mailsupport.core.verp import is_bounce_address

# What may arrive at our bounce address and keep its kind: the reports it is there for.
_REPORTS = frozenset({MailKind.BOUNCE, MailKind.FEEDBACK})


def screen_message(
    parsed: ParsedMessage,
    envelope_from: str | None,
    config: Config,
    envelope_to: Sequence[str] = (),
) -> Screening:
    """Screen with the envelope sender, when the channel knew it, as the return path.

    A bounce arrives with the null sender ``MAIL FROM:<>``; the listener stores the envelope
    beside the raw bytes rather than adding a Return-Path header to them. Postfix's pipe hands
    the null sender over as ``MAILER-DAEMON``, which is read as ``<>``.
    """
    if envelope_from is not None:
        sender = "" if is_null_sender(envelope_from) else envelope_from.strip("<>").lower()
        parsed = replace(parsed, return_path=sender)
    screening = screen(
        parsed, own_addresses=config.support_addresses, own_domains=config.own_domains
    )
    return _at_bounce_address(screening, parsed, envelope_to, config)


def _at_bounce_address(
    screening: Screening, parsed: ParsedMessage, envelope_to: Sequence[str], config: Config
) -> Screening:
    """Mail to our bounce address that is no delivery report is an automatic answer.

    Responders answer the return path, as RFC 3834 asks, and many send no Auto-Submitted:
    such mail may join the ticket it answers, but it opens none and is never answered.
    """
    if screening.kind in _REPORTS:
        return screening
    base = config.support.address
    address = next((a for a in _recipients(parsed, envelope_to) if is_bounce_address(a, base)), "")
    if not address:
        return screening
    reason = f"sent to our bounce address {address}, not a delivery report"
    return Screening(MailKind.AUTO_REPLY, (*screening.reasons, reason), no_auto_reply=True)


def _recipients(parsed: ParsedMessage, envelope_to: Sequence[str]) -> Iterator[str]:
    yield from envelope_to
    yield from (a.email for a in (*parsed.to, *parsed.cc))
    for name in ("Delivered-To", "X-Original-To"):
        yield from (v.strip().strip("<>").lower() for v in parsed.header_all(name))


def screening_marks(screening: Screening) -> dict[str, Any]:
    """The stored message's columns that record what screening found."""
    return {
        "kind": screening.kind,
        "screen_reasons": list(screening.reasons),
        "no_auto_reply": screening.no_auto_reply,
    }
