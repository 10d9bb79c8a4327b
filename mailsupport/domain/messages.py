"""Messages of a ticket's conversation: the mail that came in and the mail we sent.

Every processed mail adds one and every acknowledgement another, so they are appended with one
prepared Core statement rather than through the ORM's unit of work.

A message's ``text`` is what it adds to the conversation: a follow-up's or an operator's reply
without the history it quotes. The whole text is not stored twice; it is read again from the
raw mail, which is kept verbatim, when someone asks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from mailsupport.core.message import Address
from mailsupport.core.parse import parse_message
from mailsupport.db.models import InboundRaw, Message, Ticket, table_of
from mailsupport.errors import MessageParseError

_MESSAGES = table_of(Message)
_INSERT = insert(_MESSAGES).returning(_MESSAGES.c.id)
_RAW = table_of(InboundRaw)
_RAWS = select(_RAW.c.inbound_id, _RAW.c.raw).where(
    _RAW.c.inbound_id.in_(bindparam("ids", expanding=True))
)


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


def full_texts(session: Session, messages: Sequence[Message]) -> dict[int, str]:
    """The whole text of each message, quoted history included, by message row id.

    Mail that came in is parsed again from its raw bytes; mail we sent, and mail whose raw
    bytes cannot be read, has its stored text.
    """
    ids = sorted({m.inbound_id for m in messages if m.inbound_id is not None})
    raws: dict[int, bytes] = {}
    if ids:
        raws = {row.inbound_id: row.raw for row in session.execute(_RAWS, {"ids": ids})}
    return {m.id: _whole_text(raws.get(m.inbound_id or 0), m.text) for m in messages}


def _whole_text(raw: bytes | None, stored: str) -> str:
    if raw is None:
        return stored
    try:
        return parse_message(raw).text
    except MessageParseError:
        return stored
