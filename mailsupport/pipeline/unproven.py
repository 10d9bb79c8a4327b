"""Unproven step: mail that fails an operator's proof is kept for the operators, nothing more.

Mail from an operator's address without proof, or sent to an operator's signed reply address
by anyone else, may be a forgery or a leaked address: Mallory answering a notification that
was forwarded to her, an operator writing with a colleague's token. Going on as a customer's
follow-up would add its sender (and whoever it was copied to) to the ticket, who would then
receive every reply, and would show an operator's internal summary as the conversation.
Such mail is kept on the ticket it names as an internal message, with the reason: it adds
no participant, changes nothing, relays nothing and notifies nobody. Mail that names no ticket
is held for review (quarantine) rather than opening one: an operator is never a ticket's
customer, and nobody is to be acknowledged on the strength of an operator's reply address.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.core.message import Address
from mailsupport.db.models import Direction, Ticket
from mailsupport.domain.actors import contact_actor
from mailsupport.domain.messages import NewMessage, add_message
from mailsupport.domain.tickets import record_event
from mailsupport.pipeline.apply import message_date
from mailsupport.pipeline.attachments import store_attachments
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import sender_address
from mailsupport.pipeline.operator import Claim

log = logging.getLogger(__name__)


def keep_unproven(
    session: Session, incoming: Incoming, ticket: Ticket, claim: Claim, now: datetime
) -> str:
    """Keep the mail on ``ticket`` as internal; returns what was done, in words."""
    parsed = incoming.parsed
    found = sender_address(parsed, incoming.envelope_from)
    address = found.address if found else None
    sender = address.email if address else ""
    log.warning(
        "message <%s> not trusted as an operator's, kept internal on ticket #%s: %s",
        parsed.message_id,
        ticket.number,
        claim.evidence,
    )
    message_row = _store_internal(session, incoming, ticket, address, claim, now)
    record_event(
        session,
        ticket,
        actor=contact_actor(sender),
        kind="operator_unverified",
        now=now,
        new=sender,
        data={
            "reason": claim.evidence,
            "message_id": parsed.message_id,
            "message_row": message_row,
        },
    )
    return f"ticket #{ticket.number}: kept internal, not trusted as an operator's: {claim.evidence}"


def _store_internal(
    session: Session,
    incoming: Incoming,
    ticket: Ticket,
    address: Address | None,
    claim: Claim,
    now: datetime,
) -> int:
    parsed = incoming.parsed
    message = NewMessage(
        message_id=parsed.message_id,
        direction=Direction.IN,
        from_email=address.email if address else "",
        from_name=address.name if address else "",
        to=parsed.to,
        cc=parsed.cc,
        subject=parsed.subject,
        date=message_date(incoming),
        text=parsed.text,
        kind=incoming.screening.kind,
        thread_reason=f"not trusted as an operator's: {claim.evidence}",
        internal=True,
        inbound_id=incoming.inbound_id,
    )
    message_row = add_message(session, ticket, message, now)
    store_attachments(session, message_row, parsed.attachments)
    return message_row
