"""Messages of a ticket's conversation: the mail that came in and the mail we sent.

Every processed mail adds one and every acknowledgement another, so they are appended with one
prepared Core statement rather than through the ORM's unit of work.

A message's ``text`` is what it adds to the conversation: a follow-up's or an operator's reply
without the history it quotes. The whole text is not stored twice; it is read again from the
raw mail, which is kept verbatim, when someone asks for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from mailsupport.core.fingerprint import fingerprint
from mailsupport.core.message import Address
from mailsupport.core.parse import parse_message
from mailsupport.db.models import Attachment, InboundRaw, Message, Ticket, table_of
from mailsupport.errors import MessageParseError

_MESSAGES = table_of(Message)
_INSERT = insert(_MESSAGES).returning(_MESSAGES.c.id)
# A sender's messages within the loop window, through ``ix_messages_sender_created``.
_RECENT = select(_MESSAGES.c.id, _MESSAGES.c.body_hash).where(
    _MESSAGES.c.from_email == bindparam("sender"),
    _MESSAGES.c.created_at >= bindparam("since"),
)
# The fingerprint of a message that must not count as an earlier copy: an operator's mail whose
# commands were refused changed nothing and relayed nothing, and the corrected mail sent again
# repeats its text.
NOT_COUNTED = "-"
_RECENT_ON_TICKET = _RECENT.where(_MESSAGES.c.ticket_id == bindparam("ticket_id"))
_TEXTS = select(_MESSAGES.c.id, _MESSAGES.c.text).where(
    _MESSAGES.c.id.in_(bindparam("ids", expanding=True))
)
_ATTACHMENTS = table_of(Attachment)
_ATTACHED = (
    select(_ATTACHMENTS.c.message_id, _ATTACHMENTS.c.sha256)
    .where(_ATTACHMENTS.c.message_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ATTACHMENTS.c.message_id, _ATTACHMENTS.c.position)
)
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
    body_hash: str | None = None  # mail that came in: its ``core.fingerprint``, once needed


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
        "body_hash": message.body_hash,
    }
    return int(session.execute(_INSERT, values).scalar_one())


def recent_fingerprints(
    session: Session, sender: str, since: datetime, *, ticket_id: int | None = None
) -> list[str]:
    """The fingerprints of the messages ``sender`` sent since ``since`` (or to ``ticket_id``).

    A message's fingerprint is stored when it is first worked out: for a mail whose sender
    had sent nothing else within the loop window, nothing needed it, and quote stripping
    costs more than the rest of processing a long mail. Such a message's is worked out here,
    from its stored text and attachments, and not written back: that would lock rows of
    other tickets.
    """
    values: dict[str, object] = {"sender": sender, "since": since}
    statement = _RECENT
    if ticket_id is not None:
        statement, values["ticket_id"] = _RECENT_ON_TICKET, ticket_id
    rows = session.execute(statement, values).all()
    missing = [row.id for row in rows if row.body_hash is None]
    known = [row.body_hash for row in rows if row.body_hash not in (None, NOT_COUNTED)]
    return known + _work_out(
        session, missing
    )


def _work_out(session: Session, message_rows: Sequence[int]) -> list[str]:
    if not message_rows:
        return []
    ids = {"ids": list(message_rows)}
    texts = {row.id: row.text for row in session.execute(_TEXTS, ids)}
    attached: dict[int, list[str]] = defaultdict(list)
    for row in session.execute(_ATTACHED, ids):
        attached[row.message_id].append(row.sha256)
    return [fingerprint(texts[i], attached[i]) for i in message_rows if i in texts]


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
