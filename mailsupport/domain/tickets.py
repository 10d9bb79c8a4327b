"""Tickets: opening, status, assignment, priority, participants; each change is an event.

Email commands, the CLI and the scheduler all change tickets through these functions, so a
status change made anywhere produces the same event (and later the same notice).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailsupport.db.models import (
    Contact,
    Counter,
    Event,
    Operator,
    Participant,
    Priority,
    Queue,
    Ticket,
    TicketStatus,
    TimeEntry,
)
from mailsupport.db.upsert import insert_ignoring_conflict
from mailsupport.domain.actors import operator_actor
from mailsupport.errors import InvalidValueError, NotFoundError

TICKET_COUNTER = "ticket"
_NEW_EVENTS = "mailsupport.new_events"


def record_event(
    session: Session,
    ticket: Ticket,
    *,
    actor: str,
    kind: str,
    now: datetime,
    old: str | None = None,
    new: str | None = None,
    data: dict[str, Any] | None = None,
) -> Event:
    event = Event(
        ticket_id=ticket.id, at=now, actor=actor, kind=kind, old=old, new=new, data=data or {}
    )
    session.add(event)
    new_events(session).append(event)
    return event


def new_events(session: Session) -> list[Event]:
    """Events recorded in this session's transaction, for deriving notifications before commit."""
    events: list[Event] = session.info.setdefault(_NEW_EVENTS, [])
    return events


def take_new_events(session: Session) -> list[Event]:
    """The events recorded since the last call, removed from the pending list."""
    events: list[Event] = session.info.pop(_NEW_EVENTS, [])
    return events


def next_ticket_number(session: Session) -> int:
    """The next number, taken under the counter row's write lock so writers never collide."""
    statement = (
        update(Counter)
        .where(Counter.name == TICKET_COUNTER)
        .values(value=Counter.value + 1)
        .returning(Counter.value)
    )
    value = session.execute(statement).scalar_one_or_none()
    if value is None:
        session.add(Counter(name=TICKET_COUNTER, value=1))
        session.flush()
        return 1
    return int(value)


def get_or_create_queue(session: Session, name: str) -> Queue:
    queue = session.execute(select(Queue).where(Queue.name == name)).scalar_one_or_none()
    if queue is None:
        session.execute(insert_ignoring_conflict(session, Queue, {"name": name}, ["name"]))
        queue = session.execute(select(Queue).where(Queue.name == name)).scalar_one()
    return queue


def open_ticket(
    session: Session,
    *,
    subject: str,
    requester: Contact,
    queue: Queue,
    actor: str,
    now: datetime,
) -> Ticket:
    ticket = Ticket(
        number=next_ticket_number(session),
        subject=subject,
        status=TicketStatus.NEW,
        priority=Priority.NORMAL,
        queue=queue,
        requester=requester,
        created_at=now,
        updated_at=now,
    )
    session.add(ticket)
    session.flush()
    record_event(
        session,
        ticket,
        actor=actor,
        kind="created",
        now=now,
        new=TicketStatus.NEW,
        data={"queue": queue.name, "requester": requester.email},
    )
    add_participant(session, ticket, requester, role="requester", actor=actor, now=now)
    return ticket


def get_ticket(session: Session, number: int, *, for_update: bool = False) -> Ticket:
    statement = select(Ticket).where(Ticket.number == number)
    if for_update:
        statement = statement.with_for_update(of=Ticket)
    ticket = session.execute(statement).unique().scalar_one_or_none()
    if ticket is None:
        raise NotFoundError(f"No such ticket: {number}")
    return ticket


def list_tickets(session: Session, status: str | None = None) -> Sequence[Ticket]:
    statement = select(Ticket).order_by(Ticket.number)
    if status is not None:
        statement = statement.where(Ticket.status == parse_status(status))
    return session.execute(statement).unique().scalars().all()


def parse_status(value: str) -> TicketStatus:
    try:
        return TicketStatus(value.strip().lower())
    except ValueError:
        choices = ", ".join(s.value for s in TicketStatus)
        raise InvalidValueError(f"Unknown status: {value} (one of {choices})") from None


def parse_priority(value: str) -> Priority:
    try:
        return Priority(value.strip().lower())
    except ValueError:
        choices = ", ".join(p.value for p in Priority)
        raise InvalidValueError(f"Unknown priority: {value} (one of {choices})") from None


def _touch(ticket: Ticket, now: datetime) -> None:
    ticket.updated_at = now


def change_status(
    session: Session, ticket: Ticket, status: TicketStatus, *, actor: str, now: datetime
) -> bool:
    """Set the status; returns False (and records nothing) when it is already that status."""
    if ticket.status == status:
        return False
    old = ticket.status
    ticket.status = status
    _touch(ticket, now)
    record_event(session, ticket, actor=actor, kind="status", now=now, old=old, new=status)
    return True


def assign(
    session: Session, ticket: Ticket, operator: Operator | None, *, actor: str, now: datetime
) -> bool:
    if not (operator is None or operator.active):
        raise InvalidValueError(f"Operator is inactive: {operator.email}")
    if ticket.assignee_id == (operator.id if operator else None):
        return False
    old = ticket.assignee.email if ticket.assignee else None
    ticket.assignee = operator
    _touch(ticket, now)
    record_event(
        session,
        ticket,
        actor=actor,
        kind="assignee",
        now=now,
        old=old,
        new=operator.email if operator else None,
    )
    return True


def set_priority(
    session: Session, ticket: Ticket, priority: Priority, *, actor: str, now: datetime
) -> bool:
    if ticket.priority == priority:
        return False
    old = ticket.priority
    ticket.priority = priority
    _touch(ticket, now)
    record_event(session, ticket, actor=actor, kind="priority", now=now, old=old, new=priority)
    return True


def participants(session: Session, ticket: Ticket) -> Sequence[Participant]:
    return (
        session.execute(
            select(Participant).where(Participant.ticket_id == ticket.id).order_by(Participant.id)
        )
        .scalars()
        .all()
    )


def is_participant(session: Session, ticket: Ticket, email: str) -> bool:
    found = session.execute(
        select(Participant.id)
        .join(Contact, Contact.id == Participant.contact_id)
        .where(Participant.ticket_id == ticket.id, Contact.email == email.lower())
    ).first()
    return found is not None


def add_participant(
    session: Session, ticket: Ticket, contact: Contact, *, role: str, actor: str, now: datetime
) -> bool:
    """Add a contact to the ticket; False when they already take part."""
    if is_participant(session, ticket, contact.email):
        return False
    session.add(Participant(ticket_id=ticket.id, contact=contact, role=role, added_at=now))
    record_event(
        session,
        ticket,
        actor=actor,
        kind="participant",
        now=now,
        new=contact.email,
        data={"role": role},
    )
    return True


def set_queue(session: Session, ticket: Ticket, queue: Queue, *, actor: str, now: datetime) -> bool:
    if ticket.queue_id == queue.id:
        return False
    old = ticket.queue.name
    ticket.queue = queue
    _touch(ticket, now)
    record_event(session, ticket, actor=actor, kind="queue", now=now, old=old, new=queue.name)
    return True


def find_queue(session: Session, name: str) -> Queue:
    queue = session.execute(
        select(Queue).where(Queue.name == name.strip().lower())
    ).scalar_one_or_none()
    if queue is None:
        raise NotFoundError(f"No such queue: {name}")
    return queue


def add_time(
    session: Session,
    ticket: Ticket,
    operator: Operator,
    minutes: int,
    work_type: str,
    *,
    now: datetime,
) -> TimeEntry:
    entry = TimeEntry(
        ticket_id=ticket.id,
        operator_id=operator.id,
        minutes=minutes,
        work_type=work_type[:100],
        at=now,
    )
    session.add(entry)
    record_event(
        session,
        ticket,
        actor=operator_actor(operator.email),
        kind="time",
        now=now,
        new=str(minutes),
        data={"minutes": minutes, "work_type": work_type},
    )
    return entry


def record_first_response(session: Session, ticket: Ticket, *, actor: str, now: datetime) -> bool:
    """Mark the ticket's first response, once; SLA clocks measure from it."""
    if ticket.first_response_at is not None:
        return False
    ticket.first_response_at = now
    record_event(session, ticket, actor=actor, kind="first_response", now=now)
    return True
