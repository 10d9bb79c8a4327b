"""Thread step: decide whether a message continues a ticket, opens one, or opens none.

It gathers the facts from the database (referenced messages, the tagged ticket and whether the
sender takes part in it) and leaves the decision to the pure ``core.threads.decide``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import bindparam, literal, select, union_all
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.subject import find_ticket_number
from mailsupport.core.threads import Action, Decision, ThreadFacts, TicketRef, decide
from mailsupport.db.memo import remembered
from mailsupport.db.models import Message, Outbox, Ticket, TicketStatus, table_of
from mailsupport.domain.tickets import is_participant
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import People

# A References header can be long; the newest ids are at its end and matter most.
MAX_REFERENCES = 50

# Mail we sent to operators is not a message of the conversation, only an outbox row; mail we
# sent to customers is both.
_MESSAGES, _OUTBOX, _TICKETS = table_of(Message), table_of(Outbox), table_of(Ticket)
_REFERENCED_ROWS = union_all(
    select(
        _MESSAGES.c.message_id, _MESSAGES.c.ticket_id, literal(False).label("to_operators")
    ).where(_MESSAGES.c.message_id.in_(bindparam("ids", expanding=True))),
    select(_OUTBOX.c.message_id, _OUTBOX.c.ticket_id, literal(True).label("to_operators")).where(
        _OUTBOX.c.message_id.in_(bindparam("ids", expanding=True)),
        _OUTBOX.c.ticket_id.is_not(None),
    ),
).subquery()
_TICKET_REF = (_TICKETS.c.id, _TICKETS.c.number, _TICKETS.c.status)
_REFERENCED = select(
    _REFERENCED_ROWS.c.message_id, _REFERENCED_ROWS.c.to_operators, *_TICKET_REF
).join(_TICKETS, _TICKETS.c.id == _REFERENCED_ROWS.c.ticket_id)
_TAGGED = select(*_TICKET_REF).where(_TICKETS.c.number == bindparam("number"))


def _ref(row: Any) -> TicketRef:
    return TicketRef(number=row.number, closed=row.status == TicketStatus.CLOSED)


def _candidate_ids(incoming: Incoming) -> list[str]:
    parsed = incoming.parsed
    ordered = [*parsed.in_reply_to, *reversed(parsed.references[-MAX_REFERENCES:])]
    own = parsed.message_id
    return list(dict.fromkeys(i for i in ordered if i and i != own))


@dataclass(frozen=True)
class Referenced:
    """The stored mail a message refers to, and its ticket."""

    ticket: TicketRef
    message_id: str
    # Mail we sent to operators only (a notification, a transcript): answering it proves
    # having seen an operator's mail, not taking part in the conversation.
    to_operators: bool


def referenced_ticket(session: Session, incoming: Incoming) -> Referenced | None:
    """The ticket of the most relevant stored message that this mail refers to.

    Asked by several steps about the same mail: looked up once per transaction.
    """
    return remembered(
        session, ("referenced", incoming.inbound_id), lambda: _referenced(session, incoming)
    )


def _referenced(session: Session, incoming: Incoming) -> Referenced | None:
    ids = _candidate_ids(incoming)
    if not ids:
        return None
    by_id: dict[str, Any] = {}
    for row in session.execute(_REFERENCED, {"ids": ids}):
        if row.message_id not in by_id or not row.to_operators:  # the conversation's first
            by_id[row.message_id] = row
    for candidate in ids:
        if candidate in by_id:
            row = by_id[candidate]
            return Referenced(_ref(row), candidate, bool(row.to_operators))
    return None


def thread(session: Session, incoming: Incoming, people: People, config: Config) -> Decision:
    referenced = referenced_ticket(session, incoming)
    sender = people.sender.email if people.sender else ""
    facts = ThreadFacts(
        kind=incoming.screening.kind,
        from_own_address=bool(sender and config.base_address(sender)),
        referenced=referenced.ticket if referenced else None,
        referenced_message_id=referenced.message_id if referenced else "",
    )
    if referenced is None:
        # A reference decides before any tag does: the tag is looked up only without one.
        facts = _with_tag(session, facts, incoming.parsed.subject, sender, config)
    decision = decide(facts, automatic_opens_tickets=config.pipeline.automatic_mail == "ticket")
    if decision.action is Action.NO_TICKET and incoming.screening.reasons:
        # Mail that opens no ticket is only on the stored message: say there what it was.
        evidence = "; ".join(incoming.screening.reasons)
        decision = replace(decision, reason=f"{decision.reason} ({evidence})")
    return decision


def _with_tag(
    session: Session, facts: ThreadFacts, subject: str, sender: str, config: Config
) -> ThreadFacts:
    """The facts with what the subject tag names: the ticket, and whether the sender is on it."""
    number = find_ticket_number(subject, config.support.tag)
    if number is None:
        return facts
    tagged = session.execute(_TAGGED, {"number": number}).first()
    return replace(
        facts,
        tagged_number=number,
        tagged=_ref(tagged) if tagged else None,
        sender_participates=bool(tagged and sender and is_participant(session, tagged.id, sender)),
    )
