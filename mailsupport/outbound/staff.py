"""Mail between the ticket and its operators: notifications, transcripts, relayed replies.

Mail to an operator carries a Reply-To that is signed for that operator and ticket, so their
reply proves who they are. Mail relayed to the customer comes from the support address as
"Alice via ACME Support": the operator's own address never reaches the customer, neither in
the headers nor in the text (a signature naming it has the support address put in its place).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailsupport.config import Config
from mailsupport.core.message import Address, Attachment
from mailsupport.core.outmail import OutgoingMail, new_message_id, validate_address
from mailsupport.core.redact import replace_addresses
from mailsupport.core.render import Templates
from mailsupport.core.replyaddr import day_number, reply_address
from mailsupport.core.subject import tagged_subject
from mailsupport.db.models import Contact, Message, Operator, Ticket
from mailsupport.domain.operators import addresses_of, queue_members
from mailsupport.domain.settings import reply_keys
from mailsupport.domain.tickets import participants
from mailsupport.outbound.outbox import enqueue
from mailsupport.outbound.policy import RELAYED_KIND, delivery_refusal


@dataclass(frozen=True)
class Thread:
    """Threading headers for a new mail on a ticket."""

    in_reply_to: str | None
    references: tuple[str, ...]


def ticket_thread(session: Session, ticket: Ticket, latest: str | None = None) -> Thread:
    """The ticket's first customer-visible mail and the latest (or ``latest``) one."""
    ids = [
        message_id
        for message_id in session.execute(
            select(Message.message_id)
            .where(Message.ticket_id == ticket.id, Message.internal.is_(False))
            .order_by(Message.id)
        ).scalars()
        if message_id
    ]
    last = latest or (ids[-1] if ids else None)
    if last is None:
        return Thread(None, ())
    return Thread(last, tuple(dict.fromkeys((*ids[:1], last))))


def ticket_summary(ticket: Ticket) -> dict[str, Any]:
    return {
        "number": ticket.number,
        "subject": ticket.subject,
        "status": ticket.status,
        "priority": ticket.priority,
        "queue": ticket.queue.name,
        "requester": str(Address(ticket.requester.email, ticket.requester.name)),
        "assignee": ticket.assignee.name if ticket.assignee else "",
    }


class StaffMail:
    """Composes and queues the mail that goes to operators or on their behalf."""

    def __init__(self, config: Config, templates: Templates) -> None:
        self.config = config
        self.templates = templates

    def _queue_address(self, ticket: Ticket) -> str:
        return self.config.address_for_queue(ticket.queue.name)

    def templated(
        self,
        ticket: Ticket,
        recipient: Address,
        template: str,
        *,
        language: str,
        context: dict[str, Any],
        now: datetime,
        thread: Thread,
        reply_to: str,
        auto_submitted: str,
    ) -> OutgoingMail:
        """A mail about ``ticket`` rendered from ``template``, from the ticket's queue address."""
        address = self._queue_address(ticket)
        support = self.config.support
        values = {
            "ticket": ticket_summary(ticket),
            "support_name": support.name,
            "support_address": address,
            "tag": support.tag,
            "contact_name": recipient.name,
            "language": language,
            **context,
        }
        rendered = self.templates.render(template, language, values)
        return OutgoingMail(
            from_name=support.name,
            from_address=address,
            to=(Address(validate_address(recipient.email), recipient.name),),
            subject=tagged_subject(support.tag, ticket.number, rendered.subject),
            text=rendered.text,
            html=rendered.html,
            message_id=new_message_id(address.rpartition("@")[2]),
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            reply_to=Address(reply_to, support.name),
            auto_submitted=auto_submitted,
            date=now,
        )

    def to_operator(
        self,
        session: Session,
        ticket: Ticket,
        operator: Operator,
        template: str,
        context: dict[str, Any],
        *,
        now: datetime,
        in_reply_to: str | None = None,
    ) -> None:
        """A notification or transcript for one operator, answerable from their mail client."""
        secret = reply_keys(session, self.config).current
        signed = reply_address(
            self._queue_address(ticket), ticket.number, operator.id, secret, day_number(now)
        )
        mail = self.templated(
            ticket,
            Address(operator.email, operator.name),
            template,
            language=self.config.support.language,
            context=context,
            now=now,
            thread=Thread(in_reply_to, (in_reply_to,) if in_reply_to else ()),
            reply_to=signed,
            auto_submitted="auto-generated",
        )
        enqueue(
            session,
            self.config,
            mail,
            ticket=ticket,
            kind=template,
            automatic=False,
            now=now,
            record=False,
        )

    def relay(
        self,
        session: Session,
        ticket: Ticket,
        operator: Operator,
        text: str,
        attachments: Sequence[Attachment],
        *,
        now: datetime,
    ) -> bool:
        """Send an operator's reply to the customer and participants; False if nobody can get it."""
        # A person's reply is not capped like automatic mail; only our own, robot and dead
        # addresses are left out.
        audience = [
            c
            for c in _customers(session, ticket)
            if delivery_refusal(session, self.config, c.email, c) is None
        ]
        if not audience:
            return False
        thread = ticket_thread(session, ticket)
        shown = replace_addresses(
            text, addresses_of(session, operator), self._queue_address(ticket)
        )
        mail = self._reply(ticket, operator, audience, shown, attachments, thread, now)
        enqueue(
            session,
            self.config,
            mail,
            ticket=ticket,
            kind=RELAYED_KIND,
            automatic=False,
            now=now,
            operator_id=operator.id,
        )
        return True

    def _reply(
        self,
        ticket: Ticket,
        operator: Operator,
        audience: Sequence[Contact],
        text: str,
        attachments: Sequence[Attachment],
        thread: Thread,
        now: datetime,
    ) -> OutgoingMail:
        """An operator's reply as the customers get it: from the queue, in the ticket's thread."""
        address = self._queue_address(ticket)
        support = self.config.support
        return OutgoingMail(
            from_name=f"{operator.name} via {support.name}",
            from_address=address,
            to=(_address(audience[0]),),
            cc=tuple(_address(c) for c in audience[1:]),
            subject="Re: " + tagged_subject(support.tag, ticket.number, ticket.subject),
            text=text,
            message_id=new_message_id(address.rpartition("@")[2]),
            in_reply_to=thread.in_reply_to,
            references=thread.references,
            reply_to=Address(address, support.name),
            auto_submitted=None,
            date=now,
            attachments=tuple(attachments),
        )

    def operators_for(self, session: Session, ticket: Ticket) -> Sequence[Operator]:
        """Who works on the ticket: its assignee, else its queue's members."""
        if ticket.assignee is not None and ticket.assignee.active:
            return [ticket.assignee]
        return queue_members(session, ticket.queue_id)


def _customers(session: Session, ticket: Ticket) -> list[Contact]:
    people = [p.contact for p in participants(session, ticket)]
    people.sort(key=lambda c: c.id != ticket.requester_id)  # the requester first
    return people


def _address(contact: Contact) -> Address:
    return Address(validate_address(contact.email), contact.name)
