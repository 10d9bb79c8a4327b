"""Screen step: recognise machine mail before anything could answer it.

Bounces, auto-replies, list mail and abuse reports are marked on the stored message; the
marks decide whether a ticket may be opened and, later, whether any automatic mail may go back.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from mailsupport.config import Config
from mailsupport.core.message import ParsedMessage, Screening
from mailsupport.core.nullsender import is_null_sender
from mailsupport.core.screen import screen


def screen_message(parsed: ParsedMessage, envelope_from: str | None, config: Config) -> Screening:
    """Screen with the envelope sender, when the channel knew it, as the return path.

    A bounce arrives with the null sender ``MAIL FROM:<>``; the listener stores the envelope
    beside the raw bytes rather than adding a Return-Path header to them. Postfix's pipe hands
    the null sender over as ``MAILER-DAEMON``, which is read as ``<>``.
    """
    if envelope_from is not None:
        sender = "" if is_null_sender(envelope_from) else envelope_from.strip("<>").lower()
        parsed = replace(parsed, return_path=sender)
    return screen(parsed, own_addresses=config.support_addresses, own_domains=config.own_domains)


def screening_marks(screening: Screening) -> dict[str, Any]:
    """The stored message's columns that record what screening found."""
    return {
        "kind": screening.kind,
        "screen_reasons": list(screening.reasons),
        "no_auto_reply": screening.no_auto_reply,
    }
