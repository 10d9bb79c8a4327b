"""The values a message carries through the pipeline steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailsupport.core.message import ParsedMessage, Screening


@dataclass(frozen=True)
class Incoming:
    """A stored message, parsed and screened, ready to be applied to tickets."""

    inbound_id: int
    envelope_to: tuple[str, ...]
    received_at: datetime
    parsed: ParsedMessage
    screening: Screening
    queue: str | None = None  # decided by the channel (an IMAP account's queue), else by address
    envelope_from: str | None = None  # MAIL FROM, when the channel had an envelope ("" for <>)
    authres_trusted: bool = False  # came through our MTA, so its Authentication-Results count
