"""Enqueueing outbound mail: a row in the transaction of the change that caused it.

The mail is rendered here, once, so retries after any failure or restart send the same bytes
with the same Message-ID. It also becomes an outbound message of its ticket, so the
conversation shows what we said and replies thread to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.outmail import OutgoingMail, build_message, recipients
from mailsupport.db.models import (
    STORABLE_IDS,
    Direction,
    Message,
    Outbox,
    OutboxRecipient,
    OutboxState,
    RecipientState,
    Ticket,
    table_of,
)
from mailsupport.domain.actors import SYSTEM
from mailsupport.domain.messages import NewMessage, add_message
from mailsupport.domain.tickets import record_event
from mailsupport.errors import InvalidValueError, NotFoundError

# Prepared Core inserts: every acknowledgement writes these rows, and the ORM's unit of work
# cost several times as much per row.
_OUTBOX = table_of(Outbox)
_INSERT_OUTBOX = insert(_OUTBOX).returning(_OUTBOX.c.id)
_INSERT_RECIPIENT = insert(table_of(OutboxRecipient))


@dataclass(frozen=True)
class Queued:
    """An outbound mail just written to the outbox."""

    id: int
    message_id: str


def cancel_superseded(session: Session, coalesce_key: str) -> int:
    """Drop not-yet-attempted mail with this key; a newer one replaces it. Returns how many."""
    rows = (
        session.execute(
            select(Outbox).where(
                Outbox.coalesce_key == coalesce_key,
                Outbox.state == OutboxState.PENDING,
                Outbox.attempts == 0,
            )
        )
        .scalars()
        .all()
    )
    for row in rows:
        row.state = OutboxState.CANCELLED
        for message in session.execute(
            select(Message).where(Message.outbox_id == row.id)
        ).scalars():
            session.delete(message)
    return len(rows)


def enqueue(
    session: Session,
    config: Config,
    mail: OutgoingMail,
    *,
    ticket: Ticket | None,
    kind: str,
    automatic: bool,
    now: datetime,
    send_after: datetime | None = None,
    coalesce_key: str | None = None,
    internal: bool = False,
    record: bool = True,
    operator_id: int | None = None,
) -> Queued:
    """Queue ``mail``; ``record`` adds it to the ticket's conversation (not for staff mail)."""
    if coalesce_key is not None:
        cancel_superseded(session, coalesce_key)
    values = {
        "ticket_id": ticket.id if ticket else None,
        "kind": kind,
        "automatic": automatic,
        "message_id": mail.message_id,
        "raw": build_message(mail),
        "state": OutboxState.PENDING,
        "created_at": now,
        "next_attempt_at": send_after or now,
        "expires_at": now + timedelta(hours=config.outbound.give_up_after_hours),
        "attempts": 0,
        "coalesce_key": coalesce_key,
    }
    row = Queued(int(session.execute(_INSERT_OUTBOX, values).scalar_one()), mail.message_id)
    _add_recipients(session, row, recipients(mail), now)
    if ticket is not None and record:
        _record_on_ticket(
            session, ticket, row, mail, kind, internal=internal, operator_id=operator_id, now=now
        )
    return row


def _add_recipients(session: Session, row: Queued, addresses: Sequence[str], now: datetime) -> None:
    session.execute(
        _INSERT_RECIPIENT,
        [
            {"outbox_id": row.id, "address": a, "state": RecipientState.PENDING, "updated_at": now}
            for a in addresses
        ],
    )


def _record_on_ticket(
    session: Session,
    ticket: Ticket,
    row: Queued,
    mail: OutgoingMail,
    kind: str,
    *,
    internal: bool,
    operator_id: int | None,
    now: datetime,
) -> None:
    message = _sent_message(row, mail, kind, internal, operator_id, now)
    add_message(session, ticket, message, now)
    record_event(
        session,
        ticket,
        actor=SYSTEM,
        kind="message",
        now=now,
        data={
            "message_id": mail.message_id,
            "direction": Direction.OUT,
            "outbox_id": row.id,
            "kind": kind,
        },
    )


def _sent_message(
    row: Queued,
    mail: OutgoingMail,
    kind: str,
    internal: bool,
    operator_id: int | None,
    now: datetime,
) -> NewMessage:
    return NewMessage(
        message_id=mail.message_id,
        direction=Direction.OUT,
        from_email=mail.from_address,
        from_name=mail.from_name,
        to=mail.to,
        cc=mail.cc,
        subject=mail.subject,
        date=mail.date or now,
        text=mail.text,
        kind=kind,
        thread_reason=f"queued by us: {kind}",
        internal=internal,
        outbox_id=row.id,
        operator_id=operator_id,
    )


def get_outbox(session: Session, outbox_id: int) -> Outbox:
    row = session.get(Outbox, outbox_id) if outbox_id in STORABLE_IDS else None
    if row is None:
        raise NotFoundError(f"No such outbound mail: {outbox_id}")
    return row


def list_outbox(session: Session, state: str | None = None, limit: int = 200) -> list[Outbox]:
    statement = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if state is not None:
        try:
            wanted = OutboxState(state)
        except ValueError:
            choices = ", ".join(s.value for s in OutboxState)
            raise InvalidValueError(f"Unknown outbox status: {state} (one of {choices})") from None
        statement = statement.where(Outbox.state == wanted)
    return list(session.execute(statement).scalars())


def retry(session: Session, config: Config, outbox_id: int, now: datetime) -> Outbox:
    """Send a failed (or waiting) mail again now, to the recipients that did not get it.

    Recipients whose mail bounced stay as they are: resending would bounce again.
    """
    row = get_outbox(session, outbox_id)
    if row.state not in (OutboxState.FAILED, OutboxState.PENDING, OutboxState.SENT):
        raise InvalidValueError(f"Outbound mail {outbox_id} is {row.state}; it cannot be retried")
    again = [
        r for r in row.recipients if r.state in (RecipientState.FAILED, RecipientState.PENDING)
    ]
    if not again:
        raise InvalidValueError(f"Outbound mail {outbox_id} has no recipient left to retry")
    for recipient in again:
        recipient.state = RecipientState.PENDING
        recipient.updated_at = now
    row.state = OutboxState.PENDING
    row.next_attempt_at = now
    row.expires_at = now + timedelta(hours=config.outbound.give_up_after_hours)
    return row
