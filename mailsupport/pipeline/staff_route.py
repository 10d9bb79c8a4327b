"""Routing mail that claims an operator: to its ticket, or, for a forward, to a new ticket.

The signed reply address names the ticket; mail proven otherwise (DKIM) finds it through our
Message-IDs or the subject tag, which operators may use freely. An operator's forward of a
customer's mail to the support address opens a ticket for that customer, who is acknowledged
as if they had written to us themselves; never for an operator or one of our own addresses.
Mail whose claim failed is kept internal on the ticket it names (``pipeline.unproven``); when
it came to an address that was its operator's once (expired, or under a rotated key), they
are told so, in a mail whose Reply-To is a fresh address to send it again to.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.forward import Forwarded, find_forwarded
from mailsupport.core.message import MailKind
from mailsupport.core.subject import find_ticket_number
from mailsupport.core.threads import Action, Decision
from mailsupport.db.models import Operator, Ticket
from mailsupport.domain.actors import operator_actor
from mailsupport.domain.contacts import get_or_create_contact
from mailsupport.domain.tickets import get_ticket, record_event
from mailsupport.errors import NotFoundError
from mailsupport.outbound.staff import StaffMail
from mailsupport.pipeline.apply import apply
from mailsupport.pipeline.context import Incoming
from mailsupport.pipeline.identify import People
from mailsupport.pipeline.operator import Claim
from mailsupport.pipeline.operator_reply import OperatorMail, handle_reply
from mailsupport.pipeline.thread import referenced_ticket
from mailsupport.pipeline.unproven import keep_unproven


def _ticket_of(session: Session, incoming: Incoming, claim: Claim, config: Config) -> Ticket | None:
    number = claim.ticket_number or None
    if number is None:
        found = referenced_ticket(session, incoming)
        number = (
            found.ticket.number
            if found is not None
            else find_ticket_number(incoming.parsed.subject, config.support.tag)
        )
    if number is None:
        return None
    try:
        return get_ticket(session, number, for_update=True)
    except NotFoundError:
        return None


def route_operator_mail(
    session: Session,
    incoming: Incoming,
    claim: Claim,
    people: People,
    config: Config,
    staff: StaffMail,
    now: datetime,
    raw: bytes,
) -> tuple[Ticket | None, str] | None:
    """Handle mail that claims an operator; None when it names no ticket to act on.

    Mail that is then let go on must not become a customer's either: see ``runner``.
    """
    ticket = _ticket_of(session, incoming, claim, config)
    if claim.operator is None:
        # A bounce that came back to a reply address goes to delivery tracking all the same.
        if ticket is None or incoming.screening.kind is MailKind.BOUNCE:
            return None
        kept = keep_unproven(session, incoming, ticket, claim, now)
        if claim.renew_for is not None and incoming.screening.kind is MailKind.NORMAL:
            # Only a person's mail: an auto-reply answered would answer back.
            _renewed_address(session, incoming, ticket, claim.renew_for, claim, staff, now)
        return ticket, kept
    if ticket is not None:
        mail = OperatorMail(claim.operator, ticket, claim.evidence, claim.to_comment_address)
        return ticket, handle_reply(session, incoming, mail, staff, now)
    forwarded = find_forwarded(incoming.parsed, raw)
    if forwarded is None or incoming.screening.kind is not MailKind.NORMAL:
        return None
    if not _may_be_customer(forwarded.sender.email.lower(), people, config):
        return None
    return _open_for_customer(session, incoming, claim, forwarded, config, now)


def _renewed_address(
    session: Session,
    incoming: Incoming,
    ticket: Ticket,
    operator: Operator,
    claim: Claim,
    staff: StaffMail,
    now: datetime,
) -> None:
    """Tell the operator their mail did nothing, from a fresh reply address."""
    staff.to_operator(
        session,
        ticket,
        operator,
        "operator_reply_address_expired",
        {"reason": claim.evidence},
        now=now,
        in_reply_to=incoming.parsed.message_id or None,
    )


def _may_be_customer(address: str, people: People, config: Config) -> bool:
    """Neither an operator's address nor one of ours: mail to it would come back to us."""
    return address not in people.operator_addresses and config.base_address(address) is None


def _open_for_customer(
    session: Session,
    incoming: Incoming,
    claim: Claim,
    forwarded: Forwarded,
    config: Config,
    now: datetime,
) -> tuple[Ticket | None, str]:
    assert claim.operator is not None
    parsed = replace(
        incoming.parsed,
        from_=forwarded.sender,
        reply_to=(),
        to=(),
        cc=(),
        subject=forwarded.subject,
        text=forwarded.text,
        html="",
        date=forwarded.date or incoming.parsed.date,
    )
    customer = replace(incoming, parsed=parsed)
    people = People(sender=get_or_create_contact(session, forwarded.sender, now), copied=())
    reason = f"forwarded by operator {claim.operator.email}"
    ticket = apply(
        session,
        incoming=customer,
        people=people,
        decision=Decision(Action.NEW_TICKET, reason),
        config=config,
        now=now,
    )
    if ticket is not None:
        record_event(
            session,
            ticket,
            actor=operator_actor(claim.operator.email),
            kind="forwarded",
            now=now,
            data={"note": forwarded.note[:2000]},
        )
    return ticket, reason
