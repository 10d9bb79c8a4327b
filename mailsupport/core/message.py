"""Immutable values describing a parsed inbound message.

The pipeline works on these values rather than on ``email.message.Message`` objects so that
every later step is a pure function of plain data and can be tested without fixtures.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Address:
    """One mailbox: a lower-cased address and a decoded display name (may be empty)."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


@dataclass(frozen=True)
class Attachment:
    """A MIME part kept as a file.

    ``filename`` is the sender's name for display only, already made harmless (no path
    separators, NUL or control characters, bounded length). It is never used to build a path.
    """

    filename: str
    content_type: str
    content: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.content)


class MailKind(enum.StrEnum):
    """What the screening step recognised a message as."""

    NORMAL = "normal"
    BOUNCE = "bounce"  # DSN / non-delivery report
    AUTO_REPLY = "auto_reply"  # vacation, out-of-office, autoresponders: answers to a mail
    AUTOMATIC = "automatic"  # machine mail answering nothing (Auto-Submitted: auto-generated)
    LIST = "list"  # mailing lists and bulk mail
    FEEDBACK = "feedback"  # ARF abuse / spam complaints


@dataclass(frozen=True)
class Screening:
    """Result of screening a message for machine-generated mail.

    ``reasons`` names the evidence (``"Auto-Submitted: auto-replied"``, ``"List-Id"``...);
    ``no_auto_reply`` is true whenever an automatic answer would risk a loop; ``spam`` names
    the filter's verdict (``"X-Spam-Flag: YES"``) when the receiving MTA flagged the mail.
    """

    kind: MailKind
    reasons: tuple[str, ...] = ()
    no_auto_reply: bool = False
    spam: str = ""


@dataclass(frozen=True)
class ParsedMessage:
    """Everything the pipeline needs from one raw message, decoded to Unicode."""

    message_id: str  # without angle brackets; "" when absent
    subject: str  # RFC 2047 decoded, whitespace folded
    from_: Address | None
    to: tuple[Address, ...]
    cc: tuple[Address, ...]
    reply_to: tuple[Address, ...]
    date: datetime | None  # timezone-aware UTC, None when missing or unparseable
    in_reply_to: tuple[str, ...]  # message ids without angle brackets
    references: tuple[str, ...]
    text: str  # plain text body; HTML-only mail rendered to text
    html: str  # the HTML body as received, "" when none
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...]  # every header, decoded, in order
    return_path: str | None  # None when no Return-Path header; "" for the null path <>
    defects: tuple[str, ...] = ()  # parser and charset problems worth keeping
    sender: Address | None = None  # the Sender header's mailbox

    def header(self, name: str) -> str | None:
        """The first header of that name (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None

    def header_all(self, name: str) -> tuple[str, ...]:
        wanted = name.lower()
        return tuple(value for key, value in self.headers if key.lower() == wanted)
