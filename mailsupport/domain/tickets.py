"""Tickets: opening, status, assignment, priority, participants; each change is an event.

Email commands, the CLI and the scheduler all change tickets through these functions, so a
status change made anywhere produces the same event (and later the same notice).

Events and participants are only ever appended, and every message the pipeline processes
adds several: they are written with prepared Core statements rather than through the ORM's
unit of work, which cost four times as much per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy import event as sqlalchemy_events
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value

from mailsupport.db.memo import ends_with_transaction, forget, remembered
from mailsupport.db.models import (
    STORABLE_IDS,
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
    table_of,
)
from mailsupport.db.upsert import insert_ignoring_conflict, prepared_insert_ignoring_conflict
from mailsupport.domain.actors import operator_actor
from mailsupport.domain.operators import operator_emails
from mailsupport.errors import InvalidValueError, NotFoundError

TICKET_COUNTER = "ticket"
_NEW_EVENTS = "mailsupport.new_events"
_UNWRITTEN_EVENTS = "mailsupport.unwritten_events"

_EVENTS = table_of(Event)
_PARTICIPANTS = table_of(Participant)
_INSERT_EVENT = insert(_EVENTS)
_ONE_PER_TICKET = ("ticket_id", "contact_id")
_CONTACTS = table_of(Contact)
_IS_PARTICIPANT = (
    select(_PARTICIPANTS.c.id)
    .join(_CONTACTS, _CONTACTS.c.id == _PARTICIPANTS.c.contact_id)
    .where(
        _PARTICIPANTS.c.ticket_id == bindparam("ticket_id"),
        _CONTACTS.c.email == bindparam("email"),
    )
    .limit(1)
)
_PARTICIPANTS_OF = (
    select(Participant)
    .where(Participant.ticket_id == bindparam("ticket_id"))
    .order_by(Participant.id)
)
_BY_NUMBER = select(Ticket).where(Ticket.number == bindparam("number"))
_BY_NUMBER_FOR_UPDATE = _BY_NUMBER.with_for_update(of=Ticket)
_COUNTERS = table_of(Counter)
_NEXT_NUMBER = (
    update(_COUNTERS)
    .where(_COUNTERS.c.name == TICKET_COUNTER)
    .values(value=_COUNTERS.c.value + 1)
    .returning(_COUNTERS.c.value)
)
_TICKETS = table_of(Ticket)
_INSERT_TICKET = insert(_TICKETS).returning(_TICKETS.c.id)
_TOUCH = (
    update(_TICKETS)
    .where(_TICKETS.c.id == bindparam("ticket_id"))
    .values(updated_at=bindparam("now"))
)
_QUEUE_BY_NAME = select(Queue).where(Queue.name == bindparam("name"))


@dataclass(frozen=True)
class RecordedEvent:
    """An event as recorded in this transaction: what notifications are derived from."""

    ticket_id: int
    at: datetime
    actor: str
    kind: str
    old: str | None = None
    new: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


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
) -> RecordedEvent:
    event = RecordedEvent(ticket.id, now, actor, kind, old, new, data or {})
    row = {"ticket_id": ticket.id, "at": now, "actor": actor, "kind": kind, "old": old}
    session.info.setdefault(_UNWRITTEN_EVENTS, []).append(
        {**row, "new": new, "data": dict(event.data)}
    )
    new_events(session).append(event)
    return event


def write_events(session: Session) -> None:
    """Insert the events recorded in this transaction so far, with one statement.

    Runs before every commit. Nothing reads the history in the transaction that writes it, so
    a message's three or four events cost one round trip instead of one each; code that ever
    needs to read them back before committing calls this first.
    """
    rows = session.info.pop(_UNWRITTEN_EVENTS, None)
    if rows:
        session.execute(_INSERT_EVENT, rows)


@sqlalchemy_events.listens_for(Session, "before_commit")
def _write_before_commit(session: Session) -> None:
    write_events(session)


# A rolled-back transaction's events go with it.
ends_with_transaction(_UNWRITTEN_EVENTS)


def new_events(session: Session) -> list[RecordedEvent]:
    """Events recorded in this session's transaction, for deriving notifications before commit."""
    events: list[RecordedEvent] = session.info.setdefault(_NEW_EVENTS, [])
    return events


def take_new_events(session: Session) -> list[RecordedEvent]:
    """The events recorded since the last call, removed from the pending list."""
    events: list[RecordedEvent] = session.info.pop(_NEW_EVENTS, [])
    return events


@dataclass
class Tentative:
    """Whether the changes made within ``tentatively`` are to be kept."""

    keep: bool = True


@contextmanager
def tentatively(session: Session) -> Iterator[Tentative]:
    """Changes to tickets, kept as a whole or, when ``keep`` is set to False, not at all.

    A SAVEPOINT undoes the rows; the events recorded meanwhile, held in the session until
    commit and read for notifications, are dropped with them, so an undone change also sends
    no mail. Events recorded before are written first: were they written within the
    SAVEPOINT, undoing it would lose them.
    """
    write_events(session)
    recorded = new_events(session)
    before = len(recorded)
    savepoint = session.begin_nested()
    tentative = Tentative()
    try:
        yield tentative
    except BaseException:
        _undo(session, savepoint, recorded, before)
        raise
    if tentative.keep:
        savepoint.commit()
    else:
        _undo(session, savepoint, recorded, before)


def _undo(
    session: Session, savepoint: SessionTransaction, recorded: list[RecordedEvent], before: int
) -> None:
    savepoint.rollback()
    session.info.pop(_UNWRITTEN_EVENTS, None)
    if session.info.get(_NEW_EVENTS) is recorded:
        del recorded[before:]
    else:  # taken meanwhile: what was queued from them went with the SAVEPOINT
        session.info.pop(_NEW_EVENTS, None)
    forget(session)


def next_ticket_number(session: Session) -> int:
    """The next number, taken under the counter row's write lock so writers never collide."""
    value = session.execute(_NEXT_NUMBER).scalar_one_or_none()
    if value is None:
        session.add(Counter(name=TICKET_COUNTER, value=1))
        session.flush()
        return 1
    return int(value)


def get_or_create_queue(session: Session, name: str) -> Queue:
    return remembered(session, ("queue", name), lambda: _get_or_create_queue(session, name))


def _get_or_create_queue(session: Session, name: str) -> Queue:
    queue = session.execute(_QUEUE_BY_NAME, {"name": name}).scalar_one_or_none()
    if queue is None:
        session.execute(insert_ignoring_conflict(session, Queue, {"name": name}, ["name"]))
        queue = session.execute(_QUEUE_BY_NAME, {"name": name}).scalar_one()
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
    values = {
        "number": next_ticket_number(session),
        "subject": subject,
        "status": TicketStatus.NEW,
        "priority": Priority.NORMAL,
        "queue_id": queue.id,
        "requester_id": requester.id,
        "created_at": now,
        "updated_at": now,
    }
    ticket_id = session.execute(_INSERT_TICKET, values).scalar_one()
    ticket = _as_loaded(session, Ticket(id=ticket_id, **values), queue, requester)
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


def _as_loaded(session: Session, ticket: Ticket, queue: Queue, requester: Contact) -> Ticket:
    """The ticket just inserted, in the session as if read back, without reading it back.

    The row was written with a Core statement (the unit of work costs several times as much);
    every column is known, so loading it again with its joined relationships would only
    spend a query on what is already here.
    """
    ticket.assignee_id = None
    ticket.first_response_at = None
    ticket.queue, ticket.requester, ticket.assignee = queue, requester, None
    make_transient_to_detached(ticket)
    session.add(ticket)
    return ticket


def get_ticket(session: Session, number: int, *, for_update: bool = False) -> Ticket:
    if number not in STORABLE_IDS:
        raise NotFoundError(f"No such ticket: {number}")
    statement = _BY_NUMBER_FOR_UPDATE if for_update else _BY_NUMBER
    ticket = session.execute(statement, {"number": number}).unique().scalar_one_or_none()
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


def touch(session: Session, ticket: Ticket, now: datetime) -> None:
    """Mark the ticket changed ``now``: a new message, nothing else about it changed.

    One prepared statement: left to the unit of work, the next query's autoflush cost about
    as much as the rest of adding a message.
    """
    session.execute(_TOUCH, {"ticket_id": ticket.id, "now": now})
    set_committed_value(ticket, "updated_at", now)


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
    return session.execute(_PARTICIPANTS_OF, {"ticket_id": ticket.id}).scalars().all()


def is_participant(session: Session, ticket_id: int, email: str) -> bool:
    found = session.execute(_IS_PARTICIPANT, {"ticket_id": ticket_id, "email": email.lower()})
    return found.first() is not None


def add_participant(
    session: Session, ticket: Ticket, contact: Contact, *, role: str, actor: str, now: datetime
) -> bool:
    """Add a contact to the ticket; False when they already take part, or may not.

    An operator's address (any of an operator's, active or not) never takes part as a
    customer: it would get the ticket's customer mail, and mail from it proves nothing.
    """
    if contact.email in operator_emails(session):
        return False
    statement = prepared_insert_ignoring_conflict(session, _PARTICIPANTS, _ONE_PER_TICKET)
    values = {"ticket_id": ticket.id, "contact_id": contact.id, "role": role, "added_at": now}
    if session.execute(statement, values).first() is None:
        return False
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


def remove_participant(
    session: Session, ticket: Ticket, email: str, *, actor: str, now: datetime
) -> None:
    """Take someone off a ticket: they get none of its mail from then on. Not its requester."""
    email = email.strip().lower()
    found = next((p for p in participants(session, ticket) if p.contact.email == email), None)
    if found is None:
        raise NotFoundError(f"{email} does not take part in ticket #{ticket.number}")
    if found.role == "requester":
        raise InvalidValueError(f"{email} is the requester of ticket #{ticket.number}")
    session.delete(found)
    session.flush()
    record_event(session, ticket, actor=actor, kind="participant_removed", now=now, old=email)


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
