"""Thread step: decide whether a message continues a ticket, opens one, or opens none.

It gathers the facts from the database (referenced messages, the tagged ticket and whether the
sender takes part in it) and leaves the decision to the pure ``core.threads.decide``.
"""

from __future__ import annotations

from sqlalchemy import select, union_all
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.subject import find_ticket_number
from mailsupport.core.threads import Decision, ThreadFacts, TicketRef, decide
from mailsupport.db.models import Message, Outbox, Ticket, TicketStatus
from mailsupport.domain.tickets import is_participant
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import People

# A References header can be long; the newest ids are at its end and matter most.
MAX_REFERENCES = 50


def _ref(ticket: Ticket) -> TicketRef:
    return TicketRef(number=ticket.number, closed=ticket.status == TicketStatus.CLOSED)


def _candidate_ids(incoming: Incoming) -> list[str]:
    parsed = incoming.parsed
    ordered = [*parsed.in_reply_to, *reversed(parsed.references[-MAX_REFERENCES:])]
    own = parsed.message_id
    return list(dict.fromkeys(i for i in ordered if i and i != own))


def referenced_ticket(session: Session, incoming: Incoming) -> tuple[Ticket, str] | None:
    """The ticket of the most relevant stored message that this mail refers to."""
    ids = _candidate_ids(incoming)
    if not ids:
        return None
    # Mail we sent to operators is not a message of the conversation, only an outbox row.
    stored = select(Message.message_id, Message.ticket_id).where(Message.message_id.in_(ids))
    sent = select(Outbox.message_id, Outbox.ticket_id).where(
        Outbox.message_id.in_(ids), Outbox.ticket_id.is_not(None)
    )
    found = union_all(stored, sent).subquery()
    rows = (
        session.execute(
            select(found.c.message_id, Ticket).join(Ticket, Ticket.id == found.c.ticket_id)
        )
        .unique()
        .all()
    )
    by_id = {message_id: ticket for message_id, ticket in rows}
    for candidate in ids:
        if candidate in by_id:
            return by_id[candidate], candidate
    return None


def _tagged_ticket(session: Session, number: int | None) -> Ticket | None:
    if number is None:
        return None
    return (
        session.execute(select(Ticket).where(Ticket.number == number)).unique().scalar_one_or_none()
    )


def thread(session: Session, incoming: Incoming, people: People, config: Config) -> Decision:
    parsed = incoming.parsed
    referenced = referenced_ticket(session, incoming)
    number = find_ticket_number(parsed.subject, config.support.tag)
    tagged = _tagged_ticket(session, number)
    sender = people.sender.email if people.sender else ""
    facts = ThreadFacts(
        kind=incoming.screening.kind,
        from_own_address=bool(sender and config.base_address(sender)),
        referenced=_ref(referenced[0]) if referenced else None,
        referenced_message_id=referenced[1] if referenced else "",
        tagged_number=number,
        tagged=_ref(tagged) if tagged else None,
        sender_participates=bool(tagged and sender and is_participant(session, tagged, sender)),
    )
    return decide(facts)
