"""Messages of a ticket's conversation: the mail that came in and the mail we sent.

Every processed mail adds one and every acknowledgement another, so they are appended with one
prepared Core statement rather than through the ORM's unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.orm import Session

from mailsupport.core.message import Address
from mailsupport.db.models import Message, Ticket, table_of

_MESSAGES = table_of(Message)
_INSERT = insert(_MESSAGES).returning(_MESSAGES.c.id)


@dataclass(frozen=True)
class NewMessage:
    """A message to add to a ticket; ``date`` is the one the mail carries."""

    message_id: str
    direction: str
    from_email: str
    from_name: str
    to: Sequence[Address]
    cc: Sequence[Address]
    subject: str
    date: datetime
    text: str
    kind: str
    thread_reason: str
    internal: bool = False
    inbound_id: int | None = None
    outbox_id: int | None = None
    operator_id: int | None = None


def add_message(session: Session, ticket: Ticket, message: NewMessage, now: datetime) -> int:
    """Add ``message`` to the ticket's conversation; returns its row id."""
    values = {
        "ticket_id": ticket.id,
        "inbound_id": message.inbound_id,
        "message_id": message.message_id,
        "direction": message.direction,
        "internal": message.internal,
        "from_email": message.from_email,
        "from_name": message.from_name[:200],
        "to": [str(a) for a in message.to],
        "cc": [str(a) for a in message.cc],
        "subject": message.subject,
        "date": message.date,
        "created_at": now,
        "text": message.text,
        "kind": message.kind,
        "thread_reason": message.thread_reason,
        "outbox_id": message.outbox_id,
        "operator_id": message.operator_id,
    }
    return int(session.execute(_INSERT, values).scalar_one())
