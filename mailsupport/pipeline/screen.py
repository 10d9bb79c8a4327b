"""Screen step: recognise machine mail before anything could answer it.

Bounces, auto-replies, list mail and abuse reports are marked on the stored message; the
marks decide whether a ticket may be opened and, later, whether any automatic mail may go back.
"""

from __future__ import annotations

from mailsupport.config import Config
from mailsupport.core.message import ParsedMessage, Screening
from mailsupport.core.screen import screen
from mailsupport.db.models import Inbound


def screen_message(parsed: ParsedMessage, config: Config) -> Screening:
    return screen(parsed, own_addresses=config.support_addresses, own_domains=config.own_domains)


def mark_inbound(row: Inbound, screening: Screening) -> None:
    row.kind = screening.kind
    row.screen_reasons = list(screening.reasons)
    row.no_auto_reply = screening.no_auto_reply
