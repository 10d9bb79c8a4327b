"""Tickets and messages as plain data, for ``--json`` and for the text views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.clock import as_utc
from mailsupport.db.models import Message, Outbox, Ticket
from mailsupport.domain.messages import full_texts
from mailsupport.domain.tickets import participants


def _iso(value: Any) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "queue": ticket.queue.name,
        "requester": ticket.requester.email,
        "assignee": ticket.assignee.email if ticket.assignee else None,
        "created_at": _iso(ticket.created_at),
        "updated_at": _iso(ticket.updated_at),
        "first_response_at": _iso(ticket.first_response_at) if ticket.first_response_at else None,
    }


def delivery_view(row: Outbox) -> dict[str, Any]:
    """Where an outbound mail stands: overall and for each of its recipients."""
    return {
        "outbox_id": row.id,
        "status": row.state,
        "attempts": row.attempts,
        "sent_at": _iso(row.sent_at) if row.sent_at else None,
        "recipients": [
            {"address": r.address, "status": r.state, "code": r.code, "detail": r.detail}
            for r in row.recipients
        ],
    }


def message_view(
    message: Message, delivery: Outbox | None = None, text_full: str | None = None
) -> dict[str, Any]:
    """A message as plain data; ``delivery`` is the outbox row of one we sent, ``text_full``
    the whole text of the mail (with what it quoted) when known."""
    return {
        "message_id": message.message_id,
        "from": message.from_email,
        "from_name": message.from_name,
        "date": _iso(message.date),
        "direction": message.direction,
        "internal": message.internal,
        "kind": message.kind,
        "subject": message.subject,
        "text": message.text,
        "text_full": message.text if text_full is None else text_full,
        "attachments": [
            {
                "id": a.id,
                "filename": a.filename,
                "size": a.size,
                "content_type": a.content_type,
            }
            for a in message.attachments
        ],
        "thread_reason": message.thread_reason,
        "outbox_id": message.outbox_id,
        "delivery": delivery_view(delivery) if delivery is not None else None,
    }


def ticket_detail(session: Session, ticket: Ticket) -> dict[str, Any]:
    messages = (
        session.execute(select(Message).where(Message.ticket_id == ticket.id).order_by(Message.id))
        .scalars()
        .all()
    )
    deliveries = _deliveries(session, messages)
    whole = full_texts(session, messages)
    return {
        **ticket_summary(ticket),
        "participants": [
            {"email": p.contact.email, "name": p.contact.name, "role": p.role}
            for p in participants(session, ticket)
        ],
        "messages": [
            message_view(m, deliveries.get(m.outbox_id or 0), whole.get(m.id)) for m in messages
        ],
    }


def _deliveries(session: Session, messages: Sequence[Message]) -> dict[int, Outbox]:
    """The outbox rows of the messages we sent, by id, with their recipients."""
    ids = [m.outbox_id for m in messages if m.outbox_id is not None]
    if not ids:
        return {}
    rows = session.execute(select(Outbox).where(Outbox.id.in_(ids))).scalars()
    return {row.id: row for row in rows}
