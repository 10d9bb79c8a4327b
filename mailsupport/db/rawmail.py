"""A message as a channel received it, and what storing it gave: values, free of SQLAlchemy.

The mail gateway builds them without importing the database layer (see db/sqlite_store.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from mailsupport.core.dedupe import DedupeKey, dedupe_key


@dataclass(frozen=True)
class RawMail:
    """A message as a channel received it."""

    raw: bytes
    channel: str
    envelope_from: str | None = None
    envelope_to: tuple[str, ...] = field(default_factory=tuple)
    queue: str | None = None  # the queue new tickets go to, when the channel decides it
    # Whether the mail came through our MTA, whose Authentication-Results it may carry: a
    # trusted relay, the gateway, an IMAP account told to trust its provider.
    authres_trusted: bool = False

    @cached_property
    def key(self) -> DedupeKey:
        """Its dedupe key: a channel that reads it before storing keeps the hashing out of the
        write transaction."""
        return dedupe_key(self.raw)


@dataclass(frozen=True)
class Stored:
    inbound_id: int
    duplicate: bool
